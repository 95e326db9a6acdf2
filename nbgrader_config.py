"""nbgrader configuration for Open LLM Lab (instructor side).

solutions/ holds the instructor source (solutions + hidden tests), labs/ the released student
versions. `python -m course_lib release LAB` runs nbgrader's generate_assignment with this file
(it writes labs/, the student version kept in the repository); handing a lab out through the
exchange is nbgrader's own `nbgrader release_assignment LAB` (see c.Exchange.root below).
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file

c.CourseDirectory.course_id = "open-llm-lab"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# nbgrader's default layout puts every assignment in a folder of its own: labs/<lab>/<lab>.ipynb.
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")
# Only notebooks are released; data a lab needs comes from course_lib's offline loaders.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]

# The exchange (nbgrader's release_assignment / fetch_assignment / submit / collect) is a folder
# the instructor and the students can all reach. Default: exchange/ in this course folder, which
# suits one machine (`bash scripts/course.sh --instructor` creates it); on a shared server
# (JupyterHub) point NBGRADER_EXCHANGE at a folder every user can write, e.g.
# `sudo mkdir -p /srv/nbgrader/exchange && sudo chmod 777 /srv/nbgrader/exchange`, and give the
# students the same setting. nbgrader's own default, /usr/local/share/nbgrader/exchange, needs root.
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE") or os.path.join(c.CourseDirectory.root, "exchange")

# Model cells (loading SmolLM2, a short training run) need time; an infinite loop must not hang
# grading forever. The per-cell limit is in seconds.
c.Execute.timeout = 180
c.Execute.interrupt_on_timeout = True

# A student who deletes or damages a graded cell gets the instructor's version back.
c.OverwriteCells.add_missing_cells = True

# nbgrader gives 0 to any test cell that wrote to stderr. Warnings, tqdm bars and HF logging all
# write there, and an honest answer must never lose points to them: drop every stderr stream
# before grading. Failures still show up as error outputs, which are graded as failures.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"[\s\S]*"
# (IgnorePattern is already in nbgrader's default autograde preprocessors; enabling it is enough.)
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 50

# Feedback shows visible tests and results, never the hidden tests' source, and nothing a
# student wrote can run in the reader's browser (course_lib/grading/feedback.py says how):
# a test cell with hidden tests keeps only "ename: evalue" (no prints, no traceback); active
# outputs are dropped; markdown, HTML and raw cells are cleaned by the exporter's filters.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "course_lib.grading.feedback.HideHiddenTestOutputs",
    "course_lib.grading.feedback.SanitizeOutputs",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.GenerateFeedback.exporter_class = "course_lib.grading.feedback.FeedbackHTMLExporter"
c.FeedbackHTMLExporter.sanitize_html = True  # nbconvert's switch (also the class default)
