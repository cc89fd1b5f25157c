"""``brats-demo run``: the whole product on a phantom case, from checkpoint to picture.

phantom case (BraTS files, and the Decathlon's 4-D layout) -> ``brats-export`` of the demo checkpoint (seed
file format) -> local Triton server ->
``brats-client`` segmentation (NIfTI and JSON report) -> server stopped -> summary (volumes, Dice against the
phantom's truth as ``brats-client evaluate`` scores it, time per stage) and preview PNG.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = DEMO_DIR / "brats_demo_checkpoint.pth"
HELD_OUT_SEED = 9001  # not among the training phantoms (demo/train_demo.py trains on seeds 1000..1031)


def _step(n: int, text: str) -> None:
    log.info("[%d/6] %s", n, text)


def _export(checkpoint: Path, repository: Path, model_format: str) -> bool:
    """Export ``checkpoint`` (``model_format`` and its flip4 companion, and the served pipeline) into ``repository``;
    an export there from the same checkpoint by the same library versions, intact, is reused instead (its
    ``manifest.json`` records both). True when reused."""
    from brats_export import cli as export_cli
    from brats_export import pipeline_model
    from brats_export import repository as repo
    from brats_export.catalogue import model_keys
    from brats_export.checkpoint import checkpoint_sha256
    from brats_export.exporters import library_versions

    keys = model_keys([model_format], server_flips=True)
    digest = checkpoint_sha256(checkpoint)
    why = repo.why_export_again(repository, keys, checkpoint_sha256=digest, libraries=library_versions())
    if why is None:
        log.info("reusing the export in %s: the same checkpoint (sha256 %s...) and library versions as its "
                 "manifest.json records (delete the folder to export again)", repository, digest[:12])
        pipeline_model.write(repository, keys, force=True)  # brats_segment carries this checkout's client code
        return True
    log.info("exporting: %s", why)
    code = export_cli.main(["--checkpoint", str(checkpoint), "--repository", str(repository),
                            "--formats", model_format, "--force", "--pipeline"])
    if code != 0:
        raise RuntimeError(f"brats-export failed with exit code {code} (see the messages above)")
    return False


def score_against_truth(prediction: Path, truth: Path) -> dict:
    """``brats-client evaluate``'s row for one case: per region Dice, HD95 (mm) and volumes."""
    from brats_client.evaluate import Pair, score_pair

    return score_pair(Pair(prediction.name, prediction, truth))


def run_demo(
    out: Path,
    *,
    checkpoint: Path = DEFAULT_CHECKPOINT,
    seed: int = HELD_OUT_SEED,
    model_format: str = "openvino",
    startup_timeout_s: float = 300.0,
) -> dict:
    """Run every stage; returns the summary (also written to ``out/summary.json``)."""
    from brats_client import ServerOptions, pipeline, progress
    from brats_client.evaluate import format_table, summarise
    from brats_client.modalities import find_case_files
    from brats_client.preview import write_preview
    from brats_client.progress import Heartbeat, elapsed
    from brats_export.phantom import make_phantom
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    from .phantom import case_id as phantom_case_id
    from .phantom import write_case, write_msd_case

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    case_id = phantom_case_id(seed)
    _step(1, f"phantom case {case_id} (seed {seed}, held out from training)")
    phantom = make_phantom(seed)
    case_dir = write_case(phantom, out / "cases", case_id)
    write_msd_case(phantom, out / "Task01_BrainTumour", f"BRATS_{seed}")  # the same case in the MSD layout
    del phantom
    times["phantom_s"] = time.perf_counter() - t0

    _step(2, f"export {checkpoint.name} ({model_format}) with parity checks, or reuse an unchanged export")
    t = time.perf_counter()
    repository = out / "model_repository"
    reused = _export(checkpoint, repository, model_format)
    times["export_s"] = time.perf_counter() - t

    model = f"brats_{model_format}"
    _step(3, f"start the local Triton server with {model} and {model}_flip4")
    t = time.perf_counter()
    seg_path = out / f"{case_id}_seg.nii.gz"
    report_path = out / f"{case_id}_report.json"
    server = TritonServer(TritonServerConfig(
        repository, models=[model, f"{model}_flip4"], grpc_port=0, http_port=0, metrics_port=0,
        log_path=out / "tritonserver.log", startup_timeout_s=startup_timeout_s
    ))
    with Heartbeat(elapsed("starting tritonserver (loading and warming up the models)"), logger=log):
        server.start()  # stopped below; on a failed start it stops itself
    try:
        times["server_start_s"] = time.perf_counter() - t
        _step(4, f"segment through {server.grpc_url} (default tiling, flip4 TTA on the server, shared memory auto)")
        t = time.perf_counter()
        files = find_case_files(case_dir)
        server_options = ServerOptions(url=server.grpc_url, model=model)
        outputs = pipeline.CaseOutputs(seg_path, None, report_path, overwrite=True)
        options = pipeline.SegmentOptions()
        pipeline.check_outputs(outputs)
        prepared = pipeline.prepare_case(files, options)
        with pipeline.open_transport(server_options, options) as transport:
            report = pipeline.finish_case(progress.infer_case(prepared, transport, log), outputs)
        times["segment_s"] = time.perf_counter() - t
        _step(5, "stop the server")
    finally:
        server.stop()
    truth = case_dir / f"{case_id}_seg.nii.gz"
    _step(6, "summary and preview")
    row = score_against_truth(seg_path, truth)
    scores = {region: round(v["dice"], 4) for region, v in row["regions"].items()}
    hd95_mm = {region: round(v["hd95_mm"], 2) for region, v in row["regions"].items()}
    preview = write_preview(case_dir / f"{case_id}_flair.nii.gz", seg_path, out / "preview.png",
                            truth=truth, overwrite=True)
    times["total_s"] = time.perf_counter() - t0
    summary = {
        "case": case_id,
        "segmentation": str(seg_path),
        "report": str(report_path),
        "preview": str(preview),
        "region_volumes_ml": report["region_volumes_ml"],
        "dice_vs_truth": scores,
        "hd95_vs_truth_mm": hd95_mm,
        "segment_stages_s": report["time_s"],
        "demo_stages_s": {k: round(v, 2) for k, v in times.items()},
        "export_reused": reused,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    vols = report["region_volumes_ml"]
    log.info("volumes (mL): WT %.1f  TC %.1f  ET %.1f", vols["WT"], vols["TC"], vols["ET"])
    log.info("against the phantom's truth (brats-client evaluate %s %s):\n%s", seg_path, truth,
             format_table(summarise([row]), 1))
    log.info("segment stages (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in report["time_s"].items()))
    log.info("demo stages (s): %s", ", ".join(f"{k[:-2]} {v:.1f}" for k, v in times.items()))
    log.info("wrote %s, %s, %s", seg_path, report_path, preview)
    log.info(
        "to serve this export: .venv/bin/brats-serve --repository %s   (then, in another shell: "
        ".venv/bin/brats-client segment %s -o %s)", repository, case_dir, out / f"{case_id}_again.nii.gz",
    )
    return summary
