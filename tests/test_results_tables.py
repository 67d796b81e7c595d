"""scripts/results_tables.py: the docs' result tables are what results/ gives."""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("results_tables", ROOT / "scripts" / "results_tables.py")
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)


def checkout(tmp_path: Path) -> Path:
    """A copy of the docs (docs/*.md, README.md) with the real results/ beside it."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    for path in rt.doc_files(ROOT):
        shutil.copy(path, root / path.relative_to(ROOT))
    (root / "results").symlink_to(ROOT / "results")
    return root


def block(name: str, body: str = "stale\n") -> str:
    return f"<!-- results: {name} -->\n{body}<!-- /results -->\n"


def test_check_passes_on_the_repo():
    problems, changed = rt.run(ROOT, check=True)
    assert problems == [] and changed == []


@pytest.mark.parametrize("name", sorted(rt.TABLES))
def test_each_table_renders_from_its_results(name):
    md = rt.render(name, ROOT / "results")
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len(rows) >= 3 and set(rows[1]) <= set("|-")  # header, rule, at least one row
    assert all(line.count("|") == rows[0].count("|") for line in rows)
    assert re.search(r"\d\.\d{2}", md) and "nan" not in md.lower()
    for folder in re.findall(r"`results/([\w-]+)/`", md):
        assert (ROOT / "results" / folder / "command.txt").is_file()


def test_an_edited_number_fails_the_check(tmp_path):
    root = checkout(tmp_path)
    doc = root / "docs" / "zz_test.md"
    doc.write_text("# t\n\n" + block("stss") + "\ntext\n\n" + block("judge_heldout"))
    assert rt.main(["--check", "--root", str(root)]) == 1  # stale
    assert rt.main(["--root", str(root)]) == 0
    assert rt.main(["--check", "--root", str(root)]) == 0
    text = doc.read_text()
    assert text.startswith("# t\n\n<!-- results: stss -->\n| grid") and "\ntext\n" in text
    assert rt.render("judge_heldout", root / "results") in text
    for path in rt.doc_files(root):  # every block of the docs, ours and the real ones, edited in turn
        original = path.read_text()
        lines = original.splitlines(keepends=True)
        for name, start, end in rt.blocks(lines)[0]:
            body = "".join(lines[start + 1 : end])
            digit = re.search(r"\d", body)
            assert digit, (path, name)
            edited = body[: digit.start()] + str((int(digit.group()) + 1) % 10) + body[digit.end() :]
            path.write_text("".join(lines[: start + 1]) + edited + "".join(lines[end:]))
            problems, _ = rt.run(root, check=True)
            assert [p for p in problems if f"table '{name}' differs" in p], (path, name)
            path.write_text(original)
    assert rt.run(root, check=True)[0] == []


def test_unknown_names_missing_files_and_stray_markers_are_reported(tmp_path, capsys):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    doc = root / "docs" / "a.md"
    fenced = "```\n" + block("not_a_table_either") + "```\n"  # an example in code is not a block
    doc.write_text(block("no_such_table") + fenced + block("stss", "keep me\n") + "<!-- /results -->\n")
    assert rt.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "docs/a.md:1: unknown table 'no_such_table'" in err
    assert "docs/a.md:9: table 'stss': results file missing: results/stss/stss.json" in err
    assert "docs/a.md:12: '<!-- /results -->' without a block" in err and "not_a_table_either" not in err
    before = doc.read_text()
    assert rt.main(["--root", str(root)]) == 1 and doc.read_text() == before  # nothing it cannot render is touched


def test_no_blocks_means_nothing_to_do(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "README.md").write_text("# plain\n")
    assert rt.run(root, check=False) == ([], []) and (root / "README.md").read_text() == "# plain\n"
