"""The report: one HTML page (plus its images) from the stages' manifests and metrics, and docs/results.md.

``build_report(inputs, out)`` reads, for every stage it is given, ``manifest.json`` (section, figures with
captions), ``metrics.json`` and ``stage.json``; it copies the figures next to ``index.html`` and renders the
jinja2 templates in ``aelab/templates``.  It loads no data and trains nothing, so a report can be rebuilt
from a run folder alone.  The page uses no script, font or image from outside its folder.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import jinja2

from aelab.io import atomic_write_json, atomic_write_text

SECTION_ORDER = ("data", "ops", "model", "sweep", "interpolation", "sampling", "training", "run")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("aelab", "templates"),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"),  # not markdown
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["num"] = _num
    return env


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, str):
        return v
    return fmt.format(v)


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def collect(inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Each stage's metrics and stage record; its figures copied to out/figures/<stage>/ (paths rewritten)."""
    stages: dict[str, Any] = {}
    for name, folder in inputs.items():
        manifest = _read(folder / "manifest.json") or {"section": None, "figures": []}
        figures = []
        for fig in manifest["figures"]:
            dest = Path("figures") / name / Path(fig["file"]).name
            (out / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / fig["file"], out / dest)
            figures.append({**fig, "file": dest.as_posix()})
        stages[name] = {"metrics": _read(folder / "metrics.json") or {}, "stage": _read(folder / "stage.json") or {},
                        "section": manifest["section"], "figures": figures, "ran_on": ran_on(folder)}
    return stages


def ran_on(folder: Path) -> str:
    """Where a training stage ran, in which precision and with which layers by taps or in fp32 (``aelab.kernels``),
    from what its run.json records (a stage can be computed on another machine and its folder copied in: the cache
    key is the same, and ``precision = "auto"`` may have measured another choice there); "" for the other
    stages."""
    run = _read(folder / "run.json") or {}
    env = run.get("environment") or {}
    if not env:
        return ""
    device = ((run.get("config") or {}).get("train") or {}).get("device", "auto")
    if env.get("cuda") and device != "cpu":  # auto picks the GPU where there is one
        where = f"{env['cuda']} GPU"
    else:
        where = f"{env.get('cpu') or env.get('machine', '') + ' CPU'}, {env.get('torch_threads')} thread(s)"
    precision = (run.get("precision") or {}).get("precision")
    taps = (run.get("kernels") or {}).get("layers") or []  # aelab.kernels: layers computed by taps
    fp32 = (run.get("kernels") or {}).get("fp32_layers") or [] if precision == "bf16" else []  # ... and in fp32
    apart = (run.get("kernels") or {}).get("bias_apart") or []  # ... with the bias added after the convolution
    return (where + {"bf16": ", bf16 autocast", "fp32": ", fp32"}.get(precision, "")
            + (f", {', '.join(taps)} by taps" if taps else "") + (f", {', '.join(fp32)} in fp32" if fp32 else "")
            + (f", the bias of {', '.join(apart)} apart" if apart else ""))


def facts(stages: dict[str, Any]) -> dict[str, Any]:
    """The numbers the prose quotes, computed from the results (so text and tables cannot disagree)."""
    out: dict[str, Any] = {}
    sweep = stages.get("sweep", {}).get("metrics", {}).get("rows", [])
    if sweep:
        dims = sorted({r["d"] for r in sweep})
        by = {(r["d"], r["model"]): r for r in sweep}
        out["dims"] = dims
        out["cnn_wins_mse"] = [d for d in dims if by[d, "CNN"]["mse"] < by[d, "PCA"]["mse"]]
        out["mse_ratio"] = {d: by[d, "PCA"]["mse"] / by[d, "CNN"]["mse"] for d in dims}
        if all("class_kept" in r for r in sweep):
            out["cnn_wins_kept"] = [d for d in dims if by[d, "CNN"]["class_kept"] > by[d, "PCA"]["class_kept"]]
    latent = stages.get("latent", {}).get("metrics", {}).get("rows", [])
    out["bf16_codes"] = sorted({r["d"] for r in latent if r.get("codes") == "bf16"})  # latent.codes_precision
    ae = [r for r in latent if r["model"] == "AE" and "fid" in r]
    if ae:
        best = {}
        for d in sorted({r["d"] for r in ae}):
            rows = [r for r in ae if r["d"] == d]
            top = min(rows, key=lambda r: r["fid"])
            diag = next((r for r in rows if r["density"] == "diag"), None)
            best[d] = {"density": top["density"], "fid": top["fid"], "confident": top["confident"],
                       "diag_fid": diag["fid"] if diag else None, "diag_confident": diag["confident"] if diag else None,
                       "ratio": diag["fid"] / top["fid"] if diag else None}
        out["best_density"] = best
        entropies = [r["class_entropy"] for r in latent if "class_entropy" in r and r["model"] != "test images"]
        out["entropy_range"] = (min(entropies), max(entropies)) if entropies else None
    summary = stages.get("restoration", {}).get("metrics", {}).get("summary", [])
    if summary:
        out["restoration"] = restoration_facts(summary)
    return out


def restoration_facts(summary: list[dict]) -> dict[str, Any]:
    """Per dataset and model (specialised, blind): the levels where it beats the best classical method on every
    score, on some, on none; and the blind model's PSNR minus the specialised one's, level by level."""
    out: dict[str, Any] = {}
    for ds in dict.fromkeys(r["dataset"] for r in summary):
        rows = [r for r in summary if r["dataset"] == ds]
        f: dict[str, Any] = {}
        for role in ("specialised", "blind"):
            scored = [r for r in rows if r.get(f"{role}_psnr") is not None]
            marks = {r["corruption"]: [k for k in ("psnr", "ssim", "class_kept") if r.get(f"{role}_beats_{k}") == "yes"]
                     for r in scored}
            n_scores = {r["corruption"]: sum(f"{role}_beats_{k}" in r for k in ("psnr", "ssim", "class_kept"))
                        for r in scored}
            groups = {"all": [c for c, m in marks.items() if len(m) == n_scores[c]],
                      "some": [c for c, m in marks.items() if 0 < len(m) < n_scores[c]],
                      "none": [c for c, m in marks.items() if not m]}
            f[role] = {**groups, "sentence": beats_sentence(groups)}
        f["blind_minus_specialised"] = {r["corruption"]: r["blind_psnr"] - r["specialised_psnr"] for r in rows
                                        if r.get("blind_psnr") is not None and r.get("specialised_psnr") is not None}
        out[ds] = f
    return out


def beats_sentence(groups: dict[str, list[str]]) -> str:
    """The levels of ``restoration_facts``'s groups as one clause, empty groups left out:
    {"all": ["a", "b"], "some": [], "none": ["c"]} -> "on every score at a, b; on no score at c"."""
    words = {"all": "on every score", "some": "on some scores", "none": "on no score"}
    clauses = [f"{words[g]} at {', '.join(groups[g])}" for g in ("all", "some", "none") if groups.get(g)]
    return "; ".join(clauses) or "at no level scored"


def build_report(inputs: dict[str, Path], out: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write out/index.html, out/metrics.json, out/results.md (+ figures); returns the metrics written."""
    out = Path(out)
    stages = collect(inputs, out)
    derived = facts(stages)
    if "config" in info:
        from aelab.recipe import describe

        derived["recipe"] = describe(info["config"]["train"])
    metrics = {"info": info, "facts": derived, "stages": {n: s["metrics"] for n, s in stages.items()},
               "seconds": {n: s["stage"].get("seconds") for n, s in stages.items()}}
    atomic_write_json(out / "metrics.json", metrics)
    env = _env()
    context = {"stages": stages, "facts": derived, "info": info}
    atomic_write_text(out / "index.html", env.get_template("report.html.j2").render(**context))
    atomic_write_text(out / "results.md", env.get_template("results.md.j2").render(**context))
    return metrics


def export_results(run: str | Path, docs: str | Path, name: str = "results") -> Path:
    """Copy a run's results.md and its figures into ``docs``: docs/results.md + docs/figures/report/..., or for
    another ``name`` docs/<name>.md + docs/figures/<name>/... (several runs side by side)."""
    report, docs = Path(run) / "report", Path(docs)
    figures = "report" if name == "results" else name
    if not (report / "results.md").exists():
        from aelab.errors import ConfigError

        raise ConfigError(f"{report} has no results.md; run aelab reproduce --out {run} first")
    text = (report / "results.md").read_text().replace("](figures/", f"](figures/{figures}/")
    try:
        argv = json.loads((Path(run) / "run.json").read_text())["command"]
        command = "aelab " + " ".join(argv[1:])
    except (OSError, ValueError, KeyError, TypeError):
        command = "unknown (no run.json)"
    title, _, rest = text.partition("\n")
    again = f"aelab docs --run {run}" + (f" --name {name}" if name != "results" else "")
    text = f"{title}\n\nCommand: `{command}`, then `{again}`.\n{rest}"
    dest = docs / "figures" / figures
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(report / "figures", dest)
    atomic_write_text(docs / f"{name}.md", text)
    return docs / f"{name}.md"
