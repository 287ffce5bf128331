"""``condiff-engine``: the command-line face of the engine (train, infer, evaluate, calibrate, bench, info).

The command line is the only part of the engine that configures logging, prints, and draws progress bars: this module
holds the commands and the parser, :mod:`engine.cli_options` what each option accepts, :mod:`engine.cli_output` the
bars, tables and ``--json`` output. Every error the engine raises on purpose (:class:`~engine.errors.EngineError`) is
shown as one line ``condiff-engine: error: <message>`` with exit status 1; argument errors exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import cli_options as opt
from engine import cli_output as show
from engine.config import DEFAULT_MIN_VOLUME_ML, PRESETS
from engine.errors import EngineError, one_line
from engine.samplers import SAMPLERS

if TYPE_CHECKING:
    from engine.evaluation_records import EvaluationReport, SyntheticReport

logger = logging.getLogger("engine.cli")

PROG = "condiff-engine"


# ------------------------------------------------------------------------------------------------------ helpers
def _set_threads(threads: int | None) -> None:
    if threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------ info
def cmd_info(args: argparse.Namespace) -> int:
    """Describe a preset or a model folder."""
    if args.model:
        from engine.card import card_to_json, read_card  # noqa: PLC0415
        from engine.diffusion import make_sampler, training_timestep_grid  # noqa: PLC0415

        card = read_card(args.model)
        stored = card_to_json(card)  # the calibration and preprocessing as the file holds them
        diffusion = card.preset.diffusion
        scheduler, steps = make_sampler(card.preset.default_sampler, diffusion, card.preset.default_steps)
        grid = training_timestep_grid(diffusion)
        summary = {
            "name": card.name,
            "version": card.version,
            "modality": card.modality,
            "preset": card.preset.name,
            "members": sorted(card.members),
            # What an analysis runs by default, and on which of the timesteps the members learned.
            "sampler": {"name": card.preset.default_sampler, "steps": steps,
                        "timesteps": [int(t) for t in scheduler.timesteps],
                        "trained_timesteps": grid.tolist() if grid is not None else "all"},
            "calibration": stored["calibration"],
            "preprocess": stored["preset"]["preprocess"],
            "software": stored.get("software"),
        }
        if not show.emit_json(args.json, summary):
            for key, value in summary.items():
                print(f"{key:12s} {value}")
        return 0
    from engine.config import get_preset  # noqa: PLC0415
    from engine.network import build_unet, count_parameters  # noqa: PLC0415

    preset = get_preset(args.preset)
    model = build_unet(preset.unet, preset.preprocess.size)
    out = {
        "preset": preset.name,
        "description": preset.description,
        "parameters": count_parameters(model),
        "input_size": preset.preprocess.size,
        "spacing_mm": preset.preprocess.spacing_mm,
        "in_channels": 2 * preset.unet.image_channels,
        "out_channels": preset.unet.image_channels,
        "prediction_type": preset.diffusion.prediction_type,
        "default_sampler": preset.default_sampler,
        "default_steps": preset.default_steps,
        "unet": preset.to_dict()["unet"],
        "preprocess": preset.to_dict()["preprocess"],
    }
    if not show.emit_json(args.json, out):
        for key in ("preset", "description", "parameters", "input_size", "spacing_mm", "prediction_type",
                    "default_sampler", "default_steps"):
            print(f"{key:16s} {out[key]}")
        print(f"{'unet':16s} {json.dumps(out['unet'])}")
    return 0


# ------------------------------------------------------------------------------------------------------ train


def _training_preset(args: argparse.Namespace) -> Any:
    """The preset named by ``--preset`` with the training levers given on the command line applied."""
    from engine.config import get_preset  # noqa: PLC0415

    preset = get_preset(args.preset)
    train = {name: value for name, value in (("anomaly_loss_weight", args.anomaly_weight),
                                             ("condition_noise", args.condition_noise),
                                             ("acquisition_augmentation", args.augment)) if value is not None}
    if train:
        preset = replace(preset, train=replace(preset.train, **train))
    if args.train_timesteps is not None:
        preset = replace(preset, diffusion=replace(preset.diffusion, train_timesteps=args.train_timesteps))
        if args.train_timesteps > 0 and preset.default_sampler == "ddim":
            # Members trained only on the timesteps the n-step sampler visits are checked, selected and later run
            # with that sampler. Fewer DDIM steps stay on those timesteps (engine.diffusion.grid_timesteps); more
            # would query timesteps they never learned, and the analysis says so.
            preset = replace(preset, default_steps=args.train_timesteps)
    if args.slice_spacing is not None:
        preset = replace(preset, preprocess=replace(preset.preprocess, slice_spacing_mm=args.slice_spacing))
    return preset


def cmd_train(args: argparse.Namespace) -> int:
    """Train one fold, several, or all ten, adding members to one model folder."""
    from engine.card import TrainingData  # noqa: PLC0415
    from engine.checkpoints import init_model_folder  # noqa: PLC0415
    from engine.data import HealthySlices, find_scans, landmarks_for_training, split_roles, split_scans  # noqa: PLC0415
    from engine.tasks.external import default_external_source, folder_source  # noqa: PLC0415
    from engine.training import TrainRequest, finish_distributed, setup_distributed, train_member  # noqa: PLC0415

    _set_threads(args.threads)
    preset = _training_preset(args)
    out = Path(args.out)
    env = setup_distributed()
    scans = find_scans(args.data, image_pattern=args.image_pattern, mask_suffix=args.mask_suffix)
    if args.roles:
        roles = split_roles(scans)
        train_scans, val_scans = roles["train"], roles["selection"]
    elif args.val_data:
        train_scans = scans
        val_scans = find_scans(args.val_data, image_pattern=args.image_pattern, mask_suffix=args.mask_suffix)
    else:
        train_scans, val_scans = split_scans(scans)
    if args.normalisation == "landmarks":
        preset = replace(preset, preprocess=landmarks_for_training(preset.preprocess, train_scans))
    size = preset.preprocess.size
    cache = out / ".train" / "cache"
    train_slices = HealthySlices.cached(train_scans, preset.preprocess, cache)
    val_slices = HealthySlices.cached(val_scans, preset.preprocess, cache)
    external = folder_source(args.external_images, size) if args.external_images else default_external_source(size)
    if env.is_main:
        val_name = (f"{args.data} (selection role)" if args.roles
                    else str(args.val_data or f"{args.data} (held-out split)"))
        data = TrainingData(train=f"{args.data} (train role)" if args.roles else str(args.data), val=val_name,
                            train_scans=len(train_scans), val_scans=len(val_scans))
        init_model_folder(out, preset, name=args.name, version=args.model_version, modality=args.modality,
                          training_data=data)
        logger.info("%s: %d training slices from %d scans, %d validation slices from %d scans", out,
                    len(train_slices), len(train_scans), len(val_slices), len(val_scans))
    for fold in args.fold:
        request = TrainRequest(preset=preset, fold=fold, model_dir=out, max_steps=args.max_steps, seed=args.seed,
                               device=args.device, resume=args.resume, batch_size=args.batch_size,
                               loader_workers=args.workers, init_from=args.init_from)
        bar = show.BarCallback(args.max_steps, f"fold {fold}", "step") if env.is_main else None
        try:
            summary = train_member(request, train_slices, val_slices, external_source=external, on_progress=bar)
        finally:
            if bar is not None:
                bar.close()
        if env.is_main:
            last = summary.checks[-1] if summary.checks else None
            checked = ((last.healthy_dssim, last.anomaly_mae_to_truth, last.anomaly_mae_to_input) if last
                       else (None, None, None))
            logger.info("fold %d done: %d steps in %.0f s (%.3f steps/s), best step %d, healthy 1-SSIM %s, "
                        "anomaly MAE to truth %s vs to input %s", fold, summary.steps, summary.seconds,
                        summary.steps_per_second, summary.best_step, *map(show.fmt, checked))
    finish_distributed(env)
    return 0


# ------------------------------------------------------------------------------------------------------ analysis
def _settings(args: argparse.Namespace, ensemble: Any) -> Any:
    from engine.results import AnalysisSettings  # noqa: PLC0415

    sampler = ensemble.info.default_sampler if args.sampler == "fast" else args.sampler
    if sampler == "paper" and args.sampler == "fast":
        sampler = "ddim"
    return AnalysisSettings(sampler=sampler, steps=args.steps, seed=args.seed,
                            batch_size=args.batch_size, slice_stride=getattr(args, "slice_stride", None),
                            scoring=_scoring(args, ensemble))


def _scoring(args: argparse.Namespace, ensemble: Any) -> Any:
    """The model card's map comparison with ``--mask-restoration`` / ``--input-blur`` applied (None: unchanged)."""
    mask, blur = getattr(args, "mask_restoration", None), getattr(args, "input_blur", None)
    if mask is None and blur is None:
        return None
    changes = {k: v for k, v in (("mask_restoration", mask), ("input_blur_px", blur)) if v is not None}
    return replace(ensemble.scoring, **changes)


def _load_model(args: argparse.Namespace) -> Any:
    from engine.ensemble import default_model_path, load_ensemble  # noqa: PLC0415

    _set_threads(args.threads)
    path = args.model or default_model_path()
    return load_ensemble(path, device=args.device, folds=getattr(args, "members", None), runtime=args.runtime)


def cmd_infer(args: argparse.Namespace) -> int:
    """Analyse one scan, or a cohort, and write mask, map, restoration, sidecar and findings on each scan's grid."""
    from engine.cohort import collect_inputs, infer_scan, open_scan  # noqa: PLC0415
    from engine.writers import check_output_folder  # noqa: PLC0415

    items = collect_inputs(args.scan, bids_suffix=_bids_suffix(args), bids_masks=args.bids_masks)
    one = len(args.scan) == 1 and len(items) == 1 and Path(args.scan[0]) == items[0].image
    if not one:
        return _infer_cohort(args, items)
    opened = open_scan(items[0].image, args.brain_mask, dicom_seg=args.dicom_seg)  # a bad file fails first
    check_output_folder(args.out)  # before the analysis, not after it
    ensemble = _load_model(args)
    threshold, source = _infer_threshold(args, ensemble)
    bar = show.BarCallback(1, items[0].image.name, "slice-step")
    try:
        summary, findings = infer_scan(ensemble, items[0].image, args.out, _settings(args, ensemble),
                                       threshold=threshold, threshold_source=source, brain_mask=args.brain_mask,
                                       min_finding_ml=args.min_finding_ml, report=args.report,
                                       dicom_seg=args.dicom_seg, on_progress=bar, opened=opened)
    finally:
        bar.close()
    from engine.findings import format_findings  # noqa: PLC0415

    logger.info("%s: %.1f mL flagged at %.4g in %.1f s", summary.id, summary.flagged_ml, threshold, summary.seconds)
    for kind, path in summary.files.items():
        print(f"{kind:13s} {path}")
    print(f"\n{len(findings.items)} finding(s) at threshold {threshold:.4g}, at least {args.min_finding_ml:g} mL "
          f"({findings.left_out} smaller region(s) left out); ranked by {findings.rank_rule}:")
    print(format_findings(findings))
    return 0


def _bids_suffix(args: argparse.Namespace) -> str:
    """The BIDS suffix of the scans the model analyses (``T1w`` for a T1 model), from its card."""
    from engine.bids import MODALITY_SUFFIX  # noqa: PLC0415
    from engine.card import read_card  # noqa: PLC0415
    from engine.ensemble import default_model_path  # noqa: PLC0415

    try:
        modality = read_card(args.model or default_model_path()).modality
    except EngineError:
        return "T1w"  # the model's own error comes when it is loaded
    return MODALITY_SUFFIX.get(modality.lower(), "T1w")


def _infer_threshold(args: argparse.Namespace, ensemble: Any) -> tuple[float, str]:
    if args.threshold is not None:
        return float(args.threshold), "--threshold"
    calibration = ensemble.info.calibration
    if calibration is None:
        raise EngineError(f"{ensemble.path}: the model is not calibrated; give --threshold "
                          "(or run condiff-engine calibrate)")
    return float(calibration.threshold), "model calibration"


def _infer_cohort(args: argparse.Namespace, items: Sequence[Any]) -> int:
    """Several scans: each analysed once (kept outputs reused unless --force), failures recorded, a table kept."""
    from engine.cohort import run_cohort  # noqa: PLC0415
    from engine.writers import check_output_folder  # noqa: PLC0415

    if args.brain_mask:
        raise EngineError("--brain-mask names one scan's mask; for several scans give a CSV manifest with a "
                          "brain_mask column")
    if not items:
        raise EngineError(f"{' '.join(map(str, args.scan))}: no scans found")
    check_output_folder(args.out)
    from engine.training import setup_distributed  # noqa: PLC0415

    dist_env = setup_distributed()  # under torchrun: one shard of the scans per rank
    ensemble = _load_model(args)
    threshold, source = _infer_threshold(args, ensemble)
    settings = _settings(args, ensemble)
    mine = items[dist_env.rank::dist_env.world_size]
    bar = show.progress_bar(len(mine), "cohort" if not dist_env.enabled else f"cohort rank {dist_env.rank}", "scan")

    def on_scan(index: int, count: int, summary: Any) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{summary.id}: {summary.status}", refresh=True)

    options = {"threshold": threshold, "threshold_source": source, "min_finding_ml": args.min_finding_ml,
               "report": args.report, "dicom_seg": args.dicom_seg}
    try:
        result = run_cohort(ensemble, mine, args.out, settings, force=args.force, tables=not dist_env.enabled,
                            on_scan=on_scan, **options)
    finally:
        bar.close()
    if dist_env.enabled:
        import torch.distributed as dist  # noqa: PLC0415

        gathered: list[Any] = [None] * dist_env.world_size
        dist.all_gather_object(gathered, list(result.scans))
        dist.destroy_process_group()
        if not dist_env.is_main:
            return 0
        known = {summary.id: summary for shard in gathered for summary in shard}
        result = run_cohort(ensemble, items, args.out, settings, known=known, **options)
    from engine import bids  # noqa: PLC0415

    dataset = bids.single_dataset(args.scan)
    if dataset is not None:
        bids.write_description(args.out, source=dataset, ensemble=ensemble,
                               settings={**result.settings, "BrainMasks": str(args.bids_masks or "")})
        for problem in bids.layout_problems(args.out):
            logger.warning("%s: not a BIDS derivative name: %s", args.out, problem)
    print(f"{'id':24s} {'status':11s} {'flagged_ml':>10s} {'findings':>8s} {'max_score':>9s}")
    for s in result.scans:
        print(f"{s.id[:24]:24s} {s.status:11s} {s.flagged_ml:10.2f} {s.findings:8d} {s.max_score:9.3f}"
              + (f"  {s.reason}" if s.reason else ""))
    done = sum(s.status != "failed" for s in result.scans)
    print(f"\n{done} of {len(result.scans)} scans analysed ({sum(s.status == 'up to date' for s in result.scans)} "
          f"up to date); table: {Path(args.out) / 'cohort.tsv'}"
          + (f"; {len(result.failed)} failed: {Path(args.out) / 'failures.tsv'}" if result.failed else ""))
    return 1 if result.failed else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure healthy scans and store the calibration in model.json."""
    from engine.calibration import calibrate, store_calibration  # noqa: PLC0415
    from engine.data import find_scans, scans_for_role  # noqa: PLC0415

    ensemble = _load_model(args)
    if args.slice_score is not None and args.slice_score != ensemble.info.slice_score:
        from engine.card import update_card  # noqa: PLC0415

        update_card(ensemble.path, lambda card: replace(card, slice_score=args.slice_score))
        ensemble = _load_model(args)  # the slice score is part of what the calibration measures
    scans = find_scans(args.data, image_pattern=args.image_pattern, mask_suffix=args.mask_suffix or None)
    scans = scans_for_role(scans, args.role, args.exclude)
    if args.max_scans:
        scans = scans[: args.max_scans]
    bar = show.BarCallback(len(scans), "calibrate", "scan")
    try:
        calibration = calibrate(ensemble, scans, _settings(args, ensemble), fpr=args.fpr, hold_out=args.hold_out,
                                shifts=args.shifts, on_progress=bar)
    finally:
        bar.close()
    store_calibration(ensemble.path, calibration)
    print(json.dumps(asdict(calibration), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The paper's metrics with controls, on a folder of cases or a CSV manifest, or on synthetic anomalies."""
    from engine.data import find_scans, scans_for_role  # noqa: PLC0415
    from engine.evaluation import evaluate, find_cases  # noqa: PLC0415

    if args.dataset is not None and args.synthetic is not None:
        raise EngineError("evaluate takes --dataset (scans with lesion labels) or --synthetic (healthy scans), "
                          "not both")
    if args.synthetic is not None:
        return _evaluate_synthetic(args)
    if args.dataset is None:
        if args.healthy is None:
            raise EngineError("evaluate needs --dataset (scans with lesion labels), --synthetic (healthy scans) or "
                              "--healthy (healthy scans alone)")
        return _evaluate_healthy(args)
    cases = find_cases(args.dataset, args.modality)
    if args.max_cases:
        cases = cases[: args.max_cases]
    if args.results is not None:
        return _evaluate_results(args, cases)
    ensemble = _load_model(args)
    healthy = scans_for_role(find_scans(args.healthy), args.role, args.exclude) if args.healthy else []
    bar = show.BarCallback(len(cases), "evaluate", "case")
    try:
        report = evaluate(ensemble, cases, _settings(args, ensemble), healthy=healthy, shifts=args.shifts,
                          on_progress=bar)
    finally:
        bar.close()
    _finish_report(args, ensemble, replace(report, dataset=str(args.dataset), modality=args.modality))
    return 0


def _evaluate_results(args: argparse.Namespace, cases: Sequence[Any]) -> int:
    """Lesion cases scored from a cohort's written maps (no model is run)."""
    from engine.evaluation import evaluate_results  # noqa: PLC0415

    if args.record or args.healthy is not None:
        raise EngineError("--results scores written maps only; --record and --healthy need the model run "
                          "(leave out --results)")
    bar = show.BarCallback(len(cases), "evaluate results", "case")
    try:
        report = replace(evaluate_results(args.results, cases, on_progress=bar), dataset=str(args.dataset))
    finally:
        bar.close()
    if args.json != opt.JSON_STDOUT:
        t = report.transfer
        print(f"{len(report.cases)} cases of {args.dataset} from the maps in {args.results} ({report.model}, "
              f"{report.sampler} {report.steps} steps, seed {report.seed}), each scan's own grid, brain voxels:")
        print(f"{'':12s} {'AP_p':>7s} {'maxDice':>8s}\n{'model':12s} {report.ap_pixel:7.3f} {report.max_dice:8.3f}\n"
              f"{'random':12s} {report.random_ap_pixel:7.3f} {report.random_max_dice:8.3f}")
        print(f"at the cohort's threshold {t.threshold:.4g}: sensitivity {show.pct(t.sensitivity)}, precision "
              f"{show.pct(t.precision)}, non-lesion brain flagged {show.pct(t.nonlesion_flagged)}, brain > 10 mm "
              f"from any lesion flagged {show.pct(t.far_flagged)}")
    show.emit_json(args.json, report.to_dict())
    return 0


def _evaluate_healthy(args: argparse.Namespace) -> int:
    """Healthy scans alone: restoration fidelity and the brain flagged, as they are and shifted (``--shifts``)."""
    from engine.calibration import healthy_report  # noqa: PLC0415
    from engine.data import find_scans, scans_for_role  # noqa: PLC0415

    scans = scans_for_role(find_scans(args.healthy), args.role, args.exclude)
    if args.max_cases:
        scans = scans[: args.max_cases]
    ensemble = _load_model(args)
    report = healthy_report(ensemble, scans, _settings(args, ensemble), shifts=args.shifts)
    if args.json != opt.JSON_STDOUT:
        shifted = "".join(f", {k} {show.pct(v)}" for k, v in report.shifted_flagged.items())
        print(f"healthy ({report.scans} scans of {args.healthy}, role {args.role}): restoration 1-SSIM "
              f"{report.restoration_dssim_in_brain:.3f}, MAE {report.restoration_mae_in_brain:.4f}; at "
              f"{report.threshold} brain flagged {show.pct(report.flagged_brain_fraction)}{shifted}")
    show.emit_json(args.json, asdict(report))
    return 0


def _evaluate_synthetic(args: argparse.Namespace) -> int:
    from engine.data import find_scans, scans_for_role  # noqa: PLC0415
    from engine.synthetic import evaluate_synthetic  # noqa: PLC0415

    scans = scans_for_role(find_scans(args.synthetic), args.role, args.exclude)
    if args.max_cases:
        scans = scans[: args.max_cases]
    ensemble = _load_model(args)
    report = evaluate_synthetic(ensemble, scans, _settings(args, ensemble), task_ids=args.tasks,
                                n_slices=args.synthetic_slices, seed=args.seed)
    dataset = f"synthetic tasks {','.join(map(str, args.tasks))} on {args.synthetic}"
    _finish_report(args, ensemble, replace(report, dataset=dataset, modality=args.modality))
    return 0


def _finish_report(args: argparse.Namespace, ensemble: Any, report: EvaluationReport | SyntheticReport) -> None:
    """Print the table, emit the JSON and keep the record (``--record``) of an evaluation."""
    if args.json != opt.JSON_STDOUT:
        show.print_table(report)
    show.emit_json(args.json, report.to_dict())
    if args.record:
        from engine.card import update_card  # noqa: PLC0415
        from engine.evaluation_records import evaluation_record  # noqa: PLC0415

        record = evaluation_record(report, command=" ".join([PROG, *map(shlex.quote, args.argv)]),
                                   recorded=datetime.now(UTC).isoformat(timespec="seconds"))
        update_card(ensemble.path, lambda card: card.with_evaluation(args.record, record))


ISA_ENVIRONMENT = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
"""``bench --isa``: the environment that restricts oneDNN and PyTorch's own kernels to an instruction set, so an
AVX-512 machine measures what an AVX2-only workstation runs."""


def cmd_bench(args: argparse.Namespace) -> int:
    """Speed and memory of the engine on this machine."""
    if args.isa != "native":
        # The switches restrict PyTorch's kernels only: ONNX Runtime picks its own from the CPU, so an AVX2 bench of
        # it needs the CPU itself to look AVX2-only (tests/benchmarks/avx2-only.sh).
        if args.runtime == "onnxruntime":
            raise EngineError(f"--isa {args.isa} restricts PyTorch's kernels only; to time onnxruntime as on an "
                              "AVX2-only CPU, run bench under tests/benchmarks/avx2-only.sh instead")
        args.runtime = "torch"
        if "torch" in sys.modules:  # the kernels are chosen when torch loads
            raise EngineError(f"--isa {args.isa} must be chosen before torch loads; set "
                              + " ".join(f"{k}={v}" for k, v in ISA_ENVIRONMENT[args.isa].items())
                              + " in the environment instead")
        os.environ.update(ISA_ENVIRONMENT[args.isa])
    from engine.bench import run_bench  # noqa: PLC0415

    _set_threads(args.threads)
    report = run_bench(preset=args.preset, model=args.model, scan=args.scan, device=args.device,
                       train_steps=args.train_steps, volume=not args.no_volume, runtime=args.runtime)
    if not show.emit_json(args.json, report):
        for key, value in report.items():
            print(f"{key:34s} {value}")
    return 0


# ------------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(prog=PROG, description="condiff engine: image-conditioned diffusion anomaly "
                                     "detection for brain MRI (Baugh et al. 2024).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a preset or a model folder")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", choices=list(PRESETS))
    group.add_argument("--model", type=Path, help="a model folder")
    opt.json_option(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train ensemble members (one per task fold)")
    p.add_argument("--data", type=Path, required=True, help="folder of healthy scans (<id>_T1.nii.gz + masks)")
    p.add_argument("--val-data", type=Path, help="folder of healthy validation scans (default: 10%% of --data)")
    p.add_argument("--preset", choices=list(PRESETS), default="small")
    p.add_argument("--fold", type=opt.folds, default=[0], help="fold 0..9, a list like 0,3,7, or 'all' (default 0)")
    p.add_argument("--out", type=Path, required=True, help="model folder to create or add members to")
    p.add_argument("--max-steps", type=opt.positive, default=3000)
    p.add_argument("--batch-size", type=opt.positive, help="global batch size (default: the preset's)")
    p.add_argument("--anomaly-weight", type=opt.non_negative, metavar="W",
                   help="extra loss weight inside synthetic anomalies: they count 1 + W times (default: the "
                   "preset's, 0 = the paper's loss); recorded in model.json, members of one folder must share it")
    p.add_argument("--condition-noise", type=opt.non_negative, metavar="STD",
                   help="coarse noise of this standard deviation added to the training condition inside the brain "
                   "(default: the preset's, 0 = none, the paper)")
    p.add_argument("--train-timesteps", type=opt.count, metavar="N",
                   help="train only on the N timesteps the N-step DDIM sampler visits (default: the preset's, "
                   "0 = all 1000, the paper)")
    p.add_argument("--augment", type=opt.fraction, metavar="P",
                   help="give this share of training slices another scanner's look (bias field, gamma, blur, noise, "
                   "anisotropic resolution) in target and condition alike (default: the preset's, 0 = none)")
    p.add_argument("--slice-spacing", type=opt.finite_positive, metavar="MM",
                   help="the model's spacing through the plane: anti-alias every scan along its slice axis to it "
                   "(default: the preset's; none keeps native slices)")
    p.add_argument("--roles", action="store_true",
                   help="split --data by the fixed role rule: train on its 'train' role, validate and select on "
                   "its 'selection' role (its 'calibration' role is left for calibrate); --val-data is then unused")
    p.add_argument("--normalisation", choices=["preset", "landmarks"], default="preset",
                   help="landmarks: standardise each scan's brain histogram to reference values fitted on --data "
                   "(default: the preset's normalisation)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the fold's last checkpoint")
    p.add_argument("--init-from", type=Path, metavar="MODEL",
                   help="start each fold from MODEL's member of that fold (train it longer without its checkpoint; "
                   "optimiser and EMA start afresh; same network, preprocessing and diffusion required)")
    p.add_argument("--name", default="condiff-model", help="model name written to model.json")
    p.add_argument("--model-version", default="1.0.0", help="model version written to model.json (model id = "
                   "<name>-v<version>)")
    p.add_argument("--modality", default="t1")
    p.add_argument("--image-pattern", default="*_T1.nii.gz", help="glob of the scans in --data")
    p.add_argument("--mask-suffix", default="_brainmask.nii.gz",
                   help="brain mask beside each scan: the scan's suffix replaced by this ('' for none)")
    p.add_argument("--external-images", type=Path, help="folder of PNG/JPEG images for task 1 (default: bundled)")
    p.add_argument("--threads", type=opt.positive, help="torch CPU threads")
    p.add_argument("--workers", type=opt.count, default=0,
                   help="processes making the training batches ahead (same batches; worth it on a GPU; default 0)")
    p.set_defaults(func=cmd_train)

    def analysis_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, help="model folder (default: the bundled condiff-t1-small)")
        p.add_argument("--sampler", choices=["fast", *SAMPLERS], default="fast",
                       help="fast = the model's few-step default; " + "; ".join(
                           f"{s.name} = {s.description}" for s in SAMPLERS.values()))
        p.add_argument("--steps", type=opt.positive, help="sampler steps (default: the model's)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        opt.runtime_option(p)
        p.add_argument("--batch-size", type=opt.positive, default=64, help="slices per network call")
        p.add_argument("--mask-restoration", action=argparse.BooleanOptionalAction, default=None,
                       help="zero the restoration outside the brain before comparing (default: the model card's)")
        p.add_argument("--input-blur", type=opt.non_negative, metavar="PX",
                       help="compare against the input smoothed inside the brain by a Gaussian of this sigma in model "
                       "pixels, the restoration's own sharpness (default: the model card's)")
        p.add_argument("--threads", type=opt.positive, help="torch CPU threads")

    p = sub.add_parser("infer", help="analyse a scan and write mask, map, restoration and sidecar")
    p.add_argument("scan", type=Path, nargs="+",
                   help="NIfTI file, DICOM folder, NRRD or MHA; several, a folder of scans, a CSV manifest (image, "
                   "brain_mask, id) or a BIDS dataset run a cohort: cohort.tsv and failures.tsv in --out, finished "
                   "scans kept; a BIDS dataset's outputs form a BIDS derivatives dataset")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--threshold", type=opt.finite, help="anomaly-map threshold (default: the model's calibrated one)")
    p.add_argument("--brain-mask", type=Path, help="brain mask on the scan's grid (for scans with skull)")
    p.add_argument("--slice-stride", type=opt.positive,
                   help="analyse every k-th axial slice (default: from the spacing)")
    p.add_argument("--report", action="store_true",
                   help="also write a one-page PDF report (identity, settings, findings, top slices, slice scores)")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write the findings as a DICOM SEG referencing the source series (DICOM input only)")
    p.add_argument("--force", action="store_true",
                   help="for a cohort: analyse every scan again, even those whose outputs are up to date")
    p.add_argument("--bids-masks", type=Path, metavar="DERIV",
                   help="for a BIDS dataset: a derivatives folder holding each scan's brain mask "
                   "(sub-*/[ses-*/]anat/<entities>_desc-brain_mask.nii.gz, e.g. fMRIPrep's)")
    p.add_argument("--min-finding-ml", type=opt.non_negative, default=DEFAULT_MIN_VOLUME_ML, metavar="ML",
                   help=f"findings smaller than this many mL are left out of the findings table "
                        f"(default: {DEFAULT_MIN_VOLUME_ML})")
    analysis_options(p)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("calibrate", help="store a healthy-scan calibration (default threshold) in model.json")
    p.add_argument("--data", type=Path, required=True, help="folder of healthy scans with brain masks")
    p.add_argument("--fpr", type=opt.open_fraction, default=0.01,
                   help="share of healthy brain pixels the threshold flags")
    p.add_argument("--max-scans", type=opt.positive)
    opt.role_option(p, "all")
    p.add_argument("--slice-score", choices=["canvas", "brain", "topk"],
                   help="the slice score the model reports (stored in model.json; default: keep the model's)")
    p.add_argument("--hold-out", type=opt.count, default=0, metavar="N",
                   help="keep the last N scans out of the threshold's choice and report what it flags on them")
    p.add_argument("--shifts", type=opt.shift_list, default=[], metavar="LIST",
                   help="also calibrate on the scans as other acquisitions show them (1mm, thick, noise, bias, "
                   "contrast, comma-separated, or 'all'): the threshold flags at most --fpr on each")
    p.add_argument("--image-pattern", default="*_T1.nii.gz")
    p.add_argument("--mask-suffix", default="_brainmask.nii.gz")
    analysis_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("evaluate", help="AP_i, AUROC, AP_p and max Dice with controls on scans with lesion masks "
                       "(--dataset) or on synthetic anomalies in healthy scans (--synthetic)")
    p.add_argument("--dataset", type=Path, help="folder of case folders (BraTS layout), one case "
                   "folder, or a CSV manifest with image,label columns")
    p.add_argument("--results", type=Path, metavar="COHORT",
                   help="with --dataset: score the maps a cohort run wrote (infer on the same scans) instead of "
                   "running the model: AP_p, max Dice and what its threshold flags, on each scan's own grid")
    p.add_argument("--synthetic", type=Path, metavar="DIR", help="instead of --dataset: healthy scans with brain "
                   "masks, corrupted by synthetic tasks with fixed seeds and scored like lesions")
    p.add_argument("--tasks", type=opt.task_list, default=[0, 1, 2, 3, 4], help="with --synthetic: task ids "
                   "(default 0,1,2,3,4)")
    p.add_argument("--synthetic-slices", type=opt.positive, metavar="N",
                   help="with --synthetic: a seeded subset of N slices (default: all brain slices)")
    p.add_argument("--members", type=opt.folds, metavar="FOLDS", help="only these members (e.g. 2 or 0,3)")
    p.add_argument("--modality", default="t1")
    opt.json_option(p)
    p.add_argument("--healthy", type=Path, help="healthy scans: restoration quality and flagged brain area")
    p.add_argument("--shifts", type=opt.shift_list, default=[], metavar="LIST",
                   help="with --healthy: also the same scans as other acquisitions show them (1mm, thick, noise, "
                   "bias, contrast, comma-separated, or 'all'), each with its flagged brain share")
    opt.role_option(p, "all")
    p.add_argument("--record", metavar="NAME", help="also keep a summary in the model's model.json under "
                   "evaluations.NAME (the model card)")
    p.add_argument("--max-cases", type=opt.positive)
    analysis_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="measure speed and memory on this machine")
    p.add_argument("--preset", choices=list(PRESETS), default="small")
    p.add_argument("--model", type=Path, help="also time a whole-volume analysis with this model folder")
    p.add_argument("--scan", type=Path, help="scan for the whole-volume timing (default: a BraTS-size synthetic)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    opt.runtime_option(p)
    p.add_argument("--train-steps", type=opt.positive, default=5)
    p.add_argument("--no-volume", action="store_true", help="skip the whole-volume timing")
    p.add_argument("--isa", choices=["native", *ISA_ENVIRONMENT], default="native",
                   help="restrict PyTorch's CPU kernels to this instruction set (avx2: what most workstations "
                   "have), as ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY would; times the torch runtime (ONNX "
                   "Runtime ignores the switches: see tests/benchmarks/avx2-only.sh)")
    p.add_argument("--threads", type=opt.positive)
    opt.json_option(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``condiff-engine``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        return int(args.func(args))
    except EngineError as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)  # one line, whatever raised it
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
