"""Every reference to the project's documentation points at a file and a section that exist (issue 25.4).

Code, cards, notebooks, tests and the docs themselves cite ``docs/<page>.md §N`` (also ranges such as
``§2.4–2.6`` and lists such as ``§4, §8``); inside a page of ``docs/``, a bare ``§N`` means that page. The
reference documents of the development set-up (``../shared``) are not part of a clone, so citing them fails.
"""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REF = re.compile(r"(docs/[\w/.-]+?\.md)(?:``|`)?(?:\s*(§[\d.]*\d(?:\s*(?:[-–,]|and)\s*§?[\d.]*\d)*))?")
NUMBER = re.compile(r"§?([\d.]*\d)")
SECTION = re.compile(r"^#{1,4}\s+([\d.]*\d)\.?\s")
GONE = re.compile(r"specs/[\w]+\.md|\bDESIGN(?:\.md)?\b|\b[Ss]pec §|shared/specs")


def tracked_text_files():
    names = subprocess.run(["git", "ls-files", "*.py", "*.yaml", "*.ipynb", "*.md", "Makefile"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / n for n in names if (ROOT / n).is_file() and n != "tests/docs/test_docs_references.py"]


def sections(page: Path) -> set[str]:
    return {m.group(1) for line in page.read_text(encoding="utf-8").splitlines() if (m := SECTION.match(line))}


def references(text: str):
    """``(page, [section numbers])`` for every documentation reference in ``text``."""
    for m in REF.finditer(text):
        yield m.group(1).rstrip("."), NUMBER.findall(m.group(2) or "")


def test_sections_are_read_from_headings_and_references_from_prose():
    found = list(references("see docs/design.md §4, §8 and ``docs/papers/grefel.md`` §2.4–2.6; docs/x.md"))
    assert found == [("docs/design.md", ["4", "8"]), ("docs/papers/grefel.md", ["2.4", "2.6"]), ("docs/x.md", [])]
    assert sections(ROOT / "docs" / "design.md") >= {"1", "2", "3", "4", "5", "6", "7", "8"}


def broken_references(files) -> list[str]:
    missing = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        refs = list(references(text))
        if f.parent.is_relative_to(ROOT / "docs"):  # a bare § inside a docs page cites that page
            refs.append((str(f.relative_to(ROOT)), re.findall(r"§([\d.]*\d)", REF.sub("", text))))
        for page, numbers in refs:
            target = ROOT / page
            if not target.is_file():
                missing.append(f"{f.name}: {page} does not exist")
                continue
            have = sections(target)
            missing += [f"{f.name}: {page} has no section {n}" for n in numbers if n not in have]
    return missing


def test_every_documentation_reference_exists():
    files = tracked_text_files()
    cited = sum(len(list(references(f.read_text(encoding="utf-8")))) for f in files)
    assert cited > 100  # the code, cards and notebooks do cite the docs
    assert broken_references(files) == []


def test_nothing_cites_the_development_set_ups_documents():
    cited = [f"{f.relative_to(ROOT)}:{i}: {m.group(0)}" for f in tracked_text_files()
             for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if (m := GONE.search(line))]
    assert cited == []


def test_a_broken_reference_is_reported(tmp_path):
    f = tmp_path / "module.py"
    f.write_text('"""See docs/nowhere.md and docs/design.md §42, §4."""\n')
    assert broken_references([f]) == ["module.py: docs/nowhere.md does not exist",
                                       "module.py: docs/design.md has no section 42"]
