"""The README's Python example runs (against a segment with a unique name, removed afterwards)."""

import pathlib
import re

import shmkit
from conftest import unique_name

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)
    assert blocks, "README.md has no python block"
    for code in blocks:
        name = unique_name("readme")
        code = code.replace('"/counter"', repr(name))
        try:
            scope = {}
            exec(compile(code, str(README), "exec"), scope)
            assert scope["count"][0] == 1
        finally:
            try:
                shmkit.Segment.remove(name)
            except shmkit.NotFound:
                pass
