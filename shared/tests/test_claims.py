import json
import math
import subprocess
import sys

import pytest

from shared import Claim, load_results, render_markdown, replace_marked_section, write_results


def test_holds_is_computed_for_every_comparator():
    assert Claim("a", "d", 5.0, 5, ">=").holds is True
    assert Claim("a", "d", 4.9, 5, ">=").holds is False
    assert Claim("a", "d", 0.3, 1 / 3, "<=").holds is True
    assert Claim("a", "d", 0.34, 1 / 3, "<=").holds is False
    assert Claim("a", "d", 0.2, 0.1, ">").holds is True
    assert Claim("a", "d", 0.1, 0.1, ">").holds is False  # a tie does not "exceed"
    assert Claim("a", "d", 0.05, 0.1, "<").holds is True
    assert Claim("a", "d", 0.1, 0.1, "<").holds is False
    assert Claim("a", "d", 1024, 1024, "==").holds is True
    assert Claim("a", "d", 1023, 1024, "==").holds is False
    assert Claim("a", "d", 1.009, 1.0, "~=", tolerance=0.01).holds is True
    assert Claim("a", "d", 1.02, 1.0, "~=", tolerance=0.01).holds is False
    assert Claim("a", "d", 3.0, None, "info").holds is None
    assert Claim("a", "d", None, 1.0, ">=").holds is False
    assert Claim("a", "d", math.nan, 1.0, "<=").holds is False


def test_bad_claims_are_rejected():
    with pytest.raises(ValueError, match="comparator"):
        Claim("a", "d", 1, 1, "=>")
    with pytest.raises(ValueError, match="target is required"):
        Claim("a", "d", 1, None, ">=")
    with pytest.raises(ValueError, match="identifier"):
        Claim("a b", "d", 1, 1)
    with pytest.raises(ValueError, match="tolerance"):
        Claim("a", "d", 1, 1, "~=", tolerance=-1)


def test_write_and_load_round_trip(tmp_path):
    claims = [
        Claim(
            "speedup",
            "NFE saved",
            7.5,
            5,
            ">=",
            baseline=1.0,
            paper="5-20x",
            unit="x",
            details={"suite": [1, 2]},
        ),
        Claim("nan_case", "cannot measure", math.nan, 1, "<="),
    ]
    path = write_results(
        "demo-pkg", claims, tmp_path / "out" / "demo-pkg.json", quick=True, meta={"seed": 0}
    )
    doc = json.loads(path.read_text())
    assert doc["dist"] == "demo-pkg" and doc["quick"] is True and doc["meta"] == {"seed": 0}
    assert doc["claims"][0]["holds"] is True and doc["claims"][1]["holds"] is False
    assert doc["claims"][1]["measured"] is None  # NaN is not valid JSON: stored as null
    dist, back, _ = load_results(path)
    assert dist == "demo-pkg" and back[0] == claims[0]
    assert [c.holds for c in back] == [True, False]


def test_write_rejects_empty_and_duplicate(tmp_path):
    with pytest.raises(ValueError, match="at least one claim"):
        write_results("x", [], tmp_path / "x.json")
    c = Claim("a", "d", 1, 1)
    with pytest.raises(ValueError, match="duplicate claim names"):
        write_results("x", [c, c], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_load_rejects_malformed(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read results file"):
        load_results(p)
    p.write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="not a results file"):
        load_results(p)


def test_render_markdown_marks_failures():
    md = render_markdown(
        [Claim("ok", "fine", 2.0, 1, ">="), Claim("bad", "b|ar", 0.5, 1, ">=")], dist="pkg"
    )
    lines = md.splitlines()
    assert lines[0] == "| package | claim | paper | target | ours | baseline | holds |"
    assert lines[2].endswith("| yes |") and lines[3].endswith("| **no** |")
    assert "b\\|ar" in lines[3]


def test_replace_marked_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- claims:start -->\nold\n<!-- claims:end -->\noutro\n")
    assert replace_marked_section(readme, "| new |") is True
    assert (
        readme.read_text() == "intro\n<!-- claims:start -->\n| new |\n<!-- claims:end -->\noutro\n"
    )
    plain = tmp_path / "plain.md"
    plain.write_text("no markers")
    assert replace_marked_section(plain, "x") is False and plain.read_text() == "no markers"
    broken = tmp_path / "broken.md"
    broken.write_text("<!-- claims:end -->\n<!-- claims:start -->")
    with pytest.raises(ValueError, match="must appear once each, in order"):
        replace_marked_section(broken, "x")


def test_cli_readme_and_report(tmp_path):
    res = write_results("pkg", [Claim("c", "desc", 3.0, 2, ">=")], tmp_path / "pkg.json")
    readme = tmp_path / "README.md"
    readme.write_text("# pkg\n<!-- claims:start -->\n<!-- claims:end -->\n")
    run = [sys.executable, "-m", "shared"]
    subprocess.run([*run, "readme", str(res), str(readme)], check=True)
    assert "| c: desc |" in readme.read_text()
    out = tmp_path / "results.md"
    subprocess.run([*run, "report", str(out), str(res)], check=True)
    text = out.read_text()
    assert "| pkg | 1/1 | full," in text and "| pkg | c: desc |" in text
    root_readme = tmp_path / "ROOT.md"
    root_readme.write_text("# x\n<!-- results:start -->\n<!-- results:end -->\n")
    failing = write_results("two", [Claim("slow", "d", 0.2, 0.1, "<=")], tmp_path / "two.json")
    subprocess.run(
        [*run, "report", str(out), str(res), str(failing), "--readme", str(root_readme)], check=True
    )
    summary = root_readme.read_text()
    assert "| pkg | 1/1 | — |" in summary and "| two | 0/1 | slow |" in summary
    bad = subprocess.run(
        [*run, "report", str(out), str(tmp_path / "missing.json")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "cannot read results file" in bad.stderr
