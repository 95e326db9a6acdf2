"""course_lib: the shared helper library of Open LLM Lab.

One module per topic (``data``, ``resources``, ``grading``, ``doctor``, ``notebooks``, and the
units' modules such as ``tokenization``, ``model``, ``training``, ``quantization``,
``profiling``, ``interpret``, ``bias``). Modules are imported explicitly, e.g.
``from course_lib.data import load_shakespeare``, so importing the package itself is instant.
"""

__version__ = "0.1.0"
