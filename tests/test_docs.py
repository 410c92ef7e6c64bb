"""The documentation site (`mkdocs.yml`, `docs/`) and README.md: the site builds
with no warning, their examples run, and the README's links lead to files and headings.

Markers, each an HTML comment on its own line just before a code block:

- `<!-- docs-test: replace "OLD" "NEW" -->` runs a Python block with OLD
  replaced by NEW (smaller sizes); several may precede one block.
- `<!-- docs-test: run -->` runs a shell block (cheap commands only), in an
  empty folder; `<!-- docs-test: run-fails: TEXT -->` expects it to fail with
  TEXT in its standard error.
- `<!-- docs-test: long-running: WHY -->` is not run; WHY says how long it
  takes (as measured) or what it needs. Every shell block has this marker
  or `run`.

The Python blocks of a page run in order in one namespace (a later block may
use an earlier one's names); the pages share one fresh process, except a page
whose first block is marked `<!-- docs-test: own-process -->` (e.g. one that
configures TensorFlow's devices, which must come before TensorFlow starts).
"""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The site's own pages; docs/results/ holds committed experiment outputs.
PAGE_FOLDERS = ("docs", "docs/guides", "docs/reports", "docs/api")
BLOCK = re.compile(r"((?:<!-- docs-test: [^\n]*-->\n)*)```(\w+)\n(.*?)\n```", re.S)
MARKER = re.compile(r"<!-- docs-test: (.*?) -->")
REPLACE = re.compile(r'replace "(.*?)" "(.*?)"$')
SHELL = ("bash", "sh", "console")


def pages():
    """README.md and the site's pages, as paths relative to the checkout."""
    found = ["README.md"]
    for folder in PAGE_FOLDERS:
        found += sorted(
            f"{folder}/{name}" for name in os.listdir(os.path.join(REPO, folder)) if name.endswith(".md")
        )
    return found


def read(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as file:
        return file.read()


def blocks(page):
    """(language, code, markers) of each fenced block of `page`."""
    text = read(page)
    return [
        (language, code, MARKER.findall(markers))
        for markers, language, code in BLOCK.findall(text)
    ]


def long_running(markers):
    return any(marker.startswith("long-running:") for marker in markers)


def python_program(page):
    """The page's Python blocks with their replacements applied, or [] if none runs."""
    program = []
    for language, code, markers in blocks(page):
        if language != "python" or long_running(markers):
            continue
        for marker in markers:
            old_new = REPLACE.match(marker)
            assert old_new or marker == "own-process", f"{page}: unknown marker {marker!r}"
            if old_new:
                old, new = old_new.groups()
                assert old in code, f"{page}: replace marker {old!r} matches nothing"
                code = code.replace(old, new)
        program.append(code)
    return program


def shell_commands(page):
    """(command, the error text it must fail with, or None) of the blocks to run."""
    commands = []
    for language, code, markers in blocks(page):
        if language in SHELL:
            for marker in markers:
                if marker == "run":
                    commands.append((code, None))
                elif marker.startswith("run-fails: "):
                    commands.append((code, marker[len("run-fails: "):]))
    return commands


def run_markers(markers):
    return [marker for marker in markers if marker == "run" or marker.startswith("run-fails: ")]


def environment(tmp_path):
    """The checkout first on the path, `python` being this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"  # a script, not a link: a link loses a virtual environment
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return dict(
        os.environ,
        PYTHONPATH=REPO,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
    )


def test_the_site_builds_strictly_with_no_broken_link_or_reference(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed: pip install ".[docs]"')
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "lamb" / "index.html").exists()


def public_names(module_file):
    """`__all__` of a module, or its top-level public classes, functions and constants."""
    with open(os.path.join(REPO, module_file), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(target, "id", None) == "__all__" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    names = []
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
    return [name for name in names if not name.startswith("_")]


@pytest.mark.parametrize(
    "module,module_file,api_page",
    [("lamb", "lamb/__init__.py", "docs/api/lamb.md"),
     ("lamb.schedules", "lamb/schedules.py", "docs/api/schedules.md"),
     ("optimization", "optimization.py", "docs/api/optimization.md")],
)
def test_every_public_name_is_on_its_api_page(module, module_file, api_page):
    """Documented by a `::: module.name` directive, or named as `module.name`."""
    text = read(api_page)
    missing = [
        name
        for name in public_names(module_file)
        if f"::: {module}.{name}\n" not in text and f"`{module}.{name}`" not in text
    ]
    assert not missing, f"{api_page} does not mention {missing} (public in {module_file})"


@pytest.mark.parametrize("page", pages())
def test_every_shell_block_is_run_or_marked_long_running(page):
    for language, code, markers in blocks(page):
        if language in SHELL:
            assert run_markers(markers) or long_running(markers), (
                f"{page}: a shell block is neither run nor marked long-running:\n{code}"
            )


# A Markdown link or image with a relative target: [text](target) or [text](target#anchor).
RELATIVE_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)#\s]+)(#[^)\s]*)?\)")


def github_anchors(page):
    """The anchors GitHub gives the headings of a Markdown file."""
    headings = re.findall(r"^#+ (.*)$", read(page), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_readme_links_lead_to_files_and_headings_of_the_checkout():
    """GitHub shows README.md outside the site, so its links are checked here."""
    links = RELATIVE_LINK.findall(read("README.md"))
    assert ("docs/guides/bert.md", "") in links  # the pattern finds the links
    broken = [
        target + anchor
        for target, anchor in links
        if not os.path.exists(os.path.join(REPO, target))
        or (anchor and anchor[1:] not in github_anchors(target))
    ]
    assert not broken, f"README.md links to files or headings that do not exist: {broken}"


@pytest.mark.parametrize("page", ["README.md", "docs/guides/bert.md"])
def test_the_run_pretraining_optimizer_list_names_every_optimizer(page):
    """The paragraph that lists `--optimizer`'s values names each of the app's."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("the optimizer table needs Keras (pip install .)")
    from lamb.optimizers.registry import OPTIMIZERS

    paragraph = next(
        text for text in read(page).split("\n\n") if re.search(r"`--optimizer` \(?lamb, ", text)
    )
    words = set(re.findall(r"\w+", paragraph))
    missing = [name for name in OPTIMIZERS if name not in words]
    assert not missing, f"{page}: the --optimizer list lacks {missing}"


@pytest.mark.parametrize("page", pages())
def test_no_shell_block_puts_a_variable_in_single_quotes(page):
    """`'gs://$BUCKET/...'` passes `$BUCKET` as it is, unexpanded: use double quotes."""
    for language, code, _ in blocks(page):
        if language in SHELL:
            quoted = re.findall(r"'[^'\n]*\$\{?[A-Za-z_][^'\n]*'", code)
            assert not quoted, f"{page}: a variable in single quotes is not expanded: {quoted}"


def own_process(page):
    python_blocks = [markers for language, _, markers in blocks(page) if language == "python"]
    return bool(python_blocks) and "own-process" in python_blocks[0]


def python_page_groups():
    """Lists of pages whose examples run in one process."""
    runnable = [page for page in pages() if python_program(page)]
    shared = [page for page in runnable if not own_process(page)]
    return [shared] + [[page] for page in runnable if own_process(page)]


@pytest.mark.parametrize("group", python_page_groups(), ids=lambda group: ",".join(group))
def test_the_python_blocks_of_the_pages_run(group, tmp_path):
    if importlib.util.find_spec("keras") is None:
        pytest.skip("the examples need Keras and TensorFlow (pip install .)")
    program = tmp_path / "blocks.json"
    program.write_text(json.dumps({page: python_program(page) for page in group}))
    runner = (
        "import json, sys\n"
        "for page, codes in json.load(open(sys.argv[1])).items():\n"
        "    namespace = {'__name__': '__main__'}\n"
        "    for number, code in enumerate(codes, 1):\n"
        "        exec(compile(code, f'{page}, python block {number}', 'exec'), namespace)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", runner, str(program)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=environment(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "page,command,error",
    [(page, *command) for page in pages() for command in shell_commands(page)],
)
def test_the_shell_commands_marked_run_do_what_the_page_says(page, command, error, tmp_path):
    if importlib.util.find_spec("keras") is None:
        pytest.skip("the commands need the package's dependencies (pip install .)")
    folder = tmp_path / "cwd"
    folder.mkdir()
    result = subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=folder, capture_output=True, text=True, timeout=300, env=environment(tmp_path),
    )
    output = f"{page}: {command}\n{result.stdout}{result.stderr}"
    if error is None:
        assert result.returncode == 0, output
    else:
        assert result.returncode != 0 and error in result.stderr, output
