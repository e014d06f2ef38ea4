"""The documentation stands on its own and keeps up with the code (pure file reading, no services).

- Every relative link in README.md, docs/*.md and bench/analysis/*.md (``[text](path)``,
  ``[text](path#anchor)``, ``[text](#anchor)``) points at a file or folder of this repository, and an
  anchor at a heading of that page.
- No page names a path outside the repository (``../…``) or a Markdown file that is not in it.
- A backquoted repository path (``plugins/…``, ``tests/…``, …) exists.
- Every ``HRLMS_*`` environment variable the code reads (plugins/, dags/, dbt_project/,
  docker-compose.yaml, .env.example, Makefile) is documented in docs/configuration.md.

The checks are functions that return the problems they find, so the tests at the bottom prove on
small broken examples that each one can fail.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def doc_files(root: Path = ROOT) -> list[Path]:
    return sorted([root / "README.md", *(root / "docs").glob("*.md"), *(root / "bench" / "analysis").glob("*.md")])


# --- Markdown parsing -------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?[^)]*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
OUTSIDE = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.@+-][\w./@+-]*)")
MD_NAME = re.compile(r"(?<![\w./<{-])((?:[\w.-]+/)*[\w-]+\.md)\b")
REPO_DIRS = ("dags", "plugins", "dbt_project", "expectations", "tests", "bench", "docs", "docker")
IGNORED = ("expectations/gx/uncommitted", "dbt_project/target", "dbt_project/logs", "docs/reports")


def split_lines(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code-block lines), each as (line number, text)."""
    prose, code, in_fence = [], [], False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            code.append((no, line))
        elif in_fence:
            code.append((no, line))
        else:
            prose.append((no, line))
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup removed, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)    # links keep their text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = "".join(ch for ch in text
                   if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_lines(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for _no, line in prose:
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


# --- The checks ---------------------------------------------------------------------------------------

def link_problems(doc: Path, root: Path = ROOT) -> list[str]:
    """Relative links that leave the repository, miss their file, or miss their anchor."""
    problems = []
    prose, _ = split_lines(doc.read_text(encoding="utf-8"))
    where = doc.relative_to(root)
    for no, line in prose:
        line = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
        for m in [*LINK.finditer(line), *IMAGE.finditer(line)]:
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto:, …
                continue
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part) if path_part else doc
            if path_part.startswith("/"):
                dest = root / path_part.lstrip("/")
            if not inside(dest, root):
                problems.append(f"{where}:{no}: link to {target!r} leaves the repository")
            elif not dest.exists():
                problems.append(f"{where}:{no}: link to {target!r}: {dest.relative_to(root)} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}:{no}: link to {target!r}: no heading with anchor #{anchor} "
                                f"in {dest.relative_to(root)}")
    return problems


def path_problems(doc: Path, root: Path = ROOT) -> list[str]:
    """Paths outside the repository (../…), Markdown files that are not in it, and backquoted
    repository paths that do not exist — in prose and in code blocks alike."""
    problems = []
    text = doc.read_text(encoding="utf-8")
    where = doc.relative_to(root)
    for no, line in enumerate(text.splitlines(), 1):
        for m in OUTSIDE.finditer(line):
            ref = m.group(1).rstrip(".,;:")
            dest = doc.parent / ref.split("#")[0]
            if not inside(dest, root) or not dest.exists():
                problems.append(f"{where}:{no}: {ref!r} points outside the repository or at nothing")
        for m in MD_NAME.finditer(line):
            name = m.group(1)    # as written next to the page, from the repository root, or a docs page
            if not any((base / name).exists() for base in (doc.parent, root, root / "docs")):
                problems.append(f"{where}:{no}: {name!r} is not a file of this repository")
        for m in INLINE_CODE.finditer(line):
            token = m.group(2).strip()
            if not re.fullmatch(rf"(?:{'|'.join(REPO_DIRS)})/[\w./-]*", token):
                continue
            if token.startswith(IGNORED):
                continue
            if not (root / token).exists():
                problems.append(f"{where}:{no}: `{token}` does not exist in the repository")
    return problems


SETTING = re.compile(r"(?<![A-Za-z0-9_])HRLMS_[A-Z0-9_]+")


def code_files(root: Path = ROOT) -> list[Path]:
    files = [*(root / "plugins").rglob("*.py"), *(root / "dags").rglob("*.py")]
    for pattern in ("*.sql", "*.yml", "*.yaml"):
        files += [p for p in (root / "dbt_project").rglob(pattern)
                  if not {"target", "logs", "dbt_packages"} & set(p.relative_to(root / "dbt_project").parts)]
    files += [p for p in (root / "plugins").rglob("*.yaml")]
    files += [root / n for n in ("docker-compose.yaml", ".env.example", "Makefile") if (root / n).exists()]
    return sorted(set(files))


def settings_in(paths: list[Path]) -> dict[str, str]:
    """HRLMS_* names -> first file naming it. A name ending in '_' (e.g. HRLMS_RUN_<NAME>) is a prefix."""
    found: dict[str, str] = {}
    for p in paths:
        where = p.relative_to(ROOT).as_posix() if inside(p, ROOT) else str(p)
        for name in SETTING.findall(p.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(name, where)
    return found


def undocumented_settings(code: dict[str, str], documented: set[str]) -> list[str]:
    missing = []
    for name, where in sorted(code.items()):
        ok = (any(d.startswith(name) and d != name for d in documented) if name.endswith("_")
              else name in documented)
        if not ok:
            missing.append(f"{name} (read in {where}) is not in docs/configuration.md")
    return missing


# --- Tests on the repository ------------------------------------------------------------------------

DOCS = doc_files()


def test_there_are_docs_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "docs/configuration.md", "docs/architecture.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_point_inside_the_repository(doc):
    assert link_problems(doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_paths_exist_in_the_repository(doc):
    assert path_problems(doc) == []


def test_every_setting_the_code_reads_is_documented():
    code = settings_in(code_files())
    assert len(code) > 30, "the scan found too few settings: has the layout changed?"
    documented = set(SETTING.findall(CONFIG_DOC.read_text(encoding="utf-8")))
    assert undocumented_settings(code, documented) == []


def test_the_readme_keeps_the_two_commands_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    linked = {m.group(1).partition("#")[0] for m in LINK.finditer(readme)}
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set(), "docs pages the README does not link"


# --- The checks can fail ----------------------------------------------------------------------------

@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "plugins").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Some `code` — and more!\n", encoding="utf-8")
    return tmp_path


def test_a_broken_link_fails(repo):
    doc = repo / "README.md"
    doc.write_text("[ok](docs/a.md) [ok](docs/a.md#some-code--and-more) [ok](#x) [web](https://e.com/x.md)\n"
                   "\n# x\n\n[gone](docs/missing.md) `[not a link](nowhere.md)`\n"
                   "[bad anchor](docs/a.md#nope) [out](../notes/PLAN.md)\n", encoding="utf-8")
    problems = link_problems(doc, repo)
    assert len(problems) == 3, problems
    assert "docs/missing.md does not exist" in problems[0]
    assert "no heading with anchor #nope" in problems[1]
    assert "leaves the repository" in problems[2]


def test_paths_outside_the_repository_and_missing_paths_fail(repo):
    doc = repo / "docs" / "b.md"
    doc.write_text("See `../notes/PLAN.md` and NOTES.md.\n```\ncat ../../etc/passwd\n```\n"
                   "`plugins/missing.py` `plugins/` `expectations/gx/uncommitted/x.html` [a](a.md)\n",
                   encoding="utf-8")
    problems = path_problems(doc, repo)
    assert any("'../notes/PLAN.md' points outside" in p for p in problems), problems
    assert any("'NOTES.md' is not a file" in p for p in problems), problems
    assert any("'../../etc/passwd' points outside" in p for p in problems), problems
    assert any("`plugins/missing.py` does not exist" in p for p in problems), problems
    assert not any("`plugins/`" in p or "uncommitted" in p or "'a.md'" in p for p in problems), problems


def test_an_undocumented_setting_fails(repo):
    code = repo / "plugins" / "x.py"
    code.write_text('os.environ.get("HRLMS_NEW_KNOB")\nos.environ["AIRFLOW_CONN_HRLMS_LMS"]\n'
                    'env_var("HRLMS_RUN_" ~ name)\n', encoding="utf-8")
    found = settings_in([code])
    assert set(found) == {"HRLMS_NEW_KNOB", "HRLMS_RUN_"}
    assert undocumented_settings(found, {"HRLMS_RUN_SNAPSHOT_ID"}) == [
        f"HRLMS_NEW_KNOB (read in {code}) is not in docs/configuration.md"]
    assert undocumented_settings(found, {"HRLMS_NEW_KNOB", "HRLMS_RUN_SNAPSHOT_ID"}) == []
