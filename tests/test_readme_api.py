"""The documented API matches the served API: every endpoint and keyword that README.md or any docs/*.md page
shows exists in the running app.

Reads the endpoints the pages name as `/name(keyword, ...)` (with `<part>` standing for each part slot)
and the keywords of every `client.predict(...)` / `client.submit(...)` call in its Python examples, then
checks them against the API description of the served app (what `gradio_client` sees).
"""

from __future__ import annotations

import ast
import re

import pytest

from app_fixtures import REPO_ROOT, shared_app_url
from parts2whole.core.labels import PART_LABELS

gradio_client = pytest.importorskip("gradio_client")

#: README.md and every docs page (pages other helpers add are checked once they are merged).
DOC_PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
DOCS = "\n".join(page.read_text() for page in DOC_PAGES)
PART_KEYS = [label.replace(" ", "_") for label in PART_LABELS]
ENDPOINT = re.compile(r"`(/[\w<>]+)\(([^)`]*)\)`")
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def readme_endpoints() -> dict[str, set[str]]:
    """Endpoint -> keywords, as README.md and docs/*.md show them."""
    shown: dict[str, set[str]] = {}
    for name, arguments in ENDPOINT.findall(DOCS):
        keywords = {word.strip() for word in arguments.split(",") if word.strip() and word.strip() != "..."}
        for endpoint in ([name.replace("<part>", key) for key in PART_KEYS] if "<part>" in name else [name]):
            shown.setdefault(endpoint, set()).update(keywords)
    for block in PYTHON_BLOCK.findall(DOCS):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("predict", "submit"):
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                api_name = keywords.pop("api_name", None)
                if isinstance(api_name, ast.Constant):
                    shown.setdefault(api_name.value, set()).update(keywords)
    return shown


@pytest.fixture(scope="module")
def served_api() -> dict[str, set[str]]:
    client = gradio_client.Client(shared_app_url(), verbose=False)
    info = client.view_api(return_format="dict", print_info=False)
    return {name: {p["parameter_name"] for p in endpoint["parameters"]} for name, endpoint in info["named_endpoints"].items()}


def test_the_docs_show_the_main_endpoints():
    assert len(DOC_PAGES) > 5, DOC_PAGES  # the docs pages are read
    shown = readme_endpoints()
    assert {"/generate", "/face_auto_mask", "/shoes_click", "/pose_from_photo", "/edit"} <= shown.keys(), sorted(shown)


def test_every_endpoint_and_keyword_in_the_docs_exists_in_the_served_app(served_api):
    problems = []
    for endpoint, keywords in sorted(readme_endpoints().items()):
        if endpoint not in served_api:
            problems.append(f"{endpoint}: no such endpoint")
        elif keywords - served_api[endpoint]:
            problems.append(f"{endpoint}: no keyword {sorted(keywords - served_api[endpoint])} "
                            f"(the app takes {sorted(served_api[endpoint])})")
    assert not problems, problems
