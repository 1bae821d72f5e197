"""The whole InfoSAM pipeline in a few minutes of one CPU core, on a tiny SAM and synthetic data (``infosam demo``).

1. A teacher that already segments: a tiny SAM is pretrained from scratch (all parameters, box prompts,
   structure loss) on the synthetic ``source`` domain and saved as an official-format ``.pth`` checkpoint.
2. InfoSAM fine-tuning through :func:`infosam.train.train`: an adapter+decoder student of that checkpoint, the
   relation module, L_seg + L_r + L_d, on the shifted ``target`` domain (low contrast, texture, clutter); and the
   same fine-tuning without the teacher (plain PEFT: L_seg only), same seed, data order and steps, so the table
   shows what InfoSAM adds beyond fine-tuning.
3. Zero-shot teacher vs plain PEFT vs InfoSAM on a held-out target test set with :func:`infosam.evaluate.evaluate`
   (S-measure, E-measure, IoU, Dice), plus captioned overlays of all three on a few test images.

Everything is seeded; the output folder is never reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from segment_anything.modeling import Sam
from torch import Tensor

from .config import config_from_dict
from .data.formats import open_dataset
from .data.prompts import noisy_box, tight_box
from .data.reading import read_image, read_mask
from .data.synthetic import write_synthetic_dataset
from .evaluate import evaluate
from .files import atomic_save_image, atomic_write_text, write_json
from .load import load_run
from .model import build_base
from .predict.draw import overlay
from .predict.prompts import Prompt
from .predict.segment import predict_logits
from .sam.checkpoint import save_sam_checkpoint
from .sam.forward import sam_forward
from .sam.specs import get_spec
from .sam.transforms import get_transform
from .step import optimizer_step, step_losses
from .train import train

TABLE_METRICS = ("S", "E_adp", "IoU", "Dice")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and schedules of the demo (the defaults are the full demo; :data:`QUICK` is for tests)."""

    source_train: int = 256
    """Source-domain images the teacher is pretrained on."""
    target_train: int = 64
    """Target-domain images the student is fine-tuned on."""
    target_test: int = 48
    """Held-out target-domain images of the table."""
    source_test: int = 24
    """Held-out source-domain images (shows that the teacher segments its own domain)."""
    pretrain_steps: int = 300
    """Optimizer steps of the teacher's pretraining."""
    pretrain_batch: int = 8
    """Images per pretraining step."""
    pretrain_lr: float = 2e-3
    """Peak learning rate of the teacher's pretraining (one-cycle schedule)."""
    finetune_epochs: int = 20
    """Epochs of InfoSAM fine-tuning over the target training images."""
    finetune_batch: int = 4
    """Images per fine-tuning step (InfoSAM's entropies need at least 2)."""
    finetune_lr: float = 2e-3
    """Adam learning rate of the student and relation module (cosine down to a tenth)."""
    overlays: int = 4
    """Target test images shown as teacher/student overlays."""
    seed: int = 0
    """Seed of the data, the teacher and the fine-tuning."""


QUICK = DemoSettings(
    source_train=16,
    target_train=8,
    target_test=4,
    source_test=2,
    pretrain_steps=4,
    pretrain_batch=4,
    finetune_epochs=1,
    overlays=2,
)


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    out_dir: Path
    teacher_checkpoint: Path
    run_dir: Path
    """The InfoSAM run."""
    baseline_run_dir: Path
    """The plain PEFT run (the same fine-tuning without the teacher)."""
    rows: list[dict]
    """One dict per table row: ``model``, ``domain`` and the metrics of :data:`TABLE_METRICS` (fractions)."""
    table: str
    """The rows as a Markdown table (percent)."""
    overlays: list[Path]
    seconds: dict[str, float]
    """Wall time of each stage."""


def default_out_dir() -> Path:
    """``./demo_out/<YYYYmmdd-HHMMSS>``."""
    return Path("demo_out") / time.strftime("%Y%m%d-%H%M%S")


def run_demo(
    out_dir: str | Path | None = None,
    *,
    settings: DemoSettings | None = None,
    quick: bool = False,
    report: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo into ``out_dir`` (default :func:`default_out_dir`), which must not exist yet.

    Args:
        settings: sizes and schedules; default :class:`DemoSettings` (or :data:`QUICK` with ``quick``).
        report: called with one line per stage (the CLI prints them).

    Raises:
        FileExistsError: ``out_dir`` exists (a previous demo is never overwritten).
    """
    settings = settings or (QUICK if quick else DemoSettings())
    say = report or (lambda _line: None)
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    if out.exists():
        raise FileExistsError(f"demo folder {out} exists; choose another --out (a demo never overwrites)")
    out.mkdir(parents=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 1)
        clock = now

    data = make_data(out / "data", settings)
    lap("data")
    say(f"[1/4] synthetic data in {out / 'data'} ({seconds['data']} s)")

    teacher = pretrain_teacher(data["source_train"], settings)
    checkpoint = save_sam_checkpoint(teacher, out / "teacher" / "tiny_source.pth")
    lap("pretrain_teacher")
    say(f"[2/4] teacher pretrained on the source domain -> {checkpoint} ({seconds['pretrain_teacher']} s)")

    run_dir = train(finetune_config(data["target"], checkpoint, out / "run", settings))
    _, student = load_run(run_dir)
    lap("finetune")
    say(f"[3/4] InfoSAM fine-tuning on the target domain -> {run_dir} ({seconds['finetune']} s)")
    baseline_dir = train(
        finetune_config(data["target"], checkpoint, out / "run_baseline", settings, infosam=False)
    )
    _, baseline = load_run(baseline_dir)
    lap("finetune_baseline")
    say(
        f"      the same without the teacher (plain PEFT) -> {baseline_dir} ({seconds['finetune_baseline']} s)"
    )

    rows = score(teacher, student, data, settings, baseline=baseline)
    table = markdown_table(rows)
    models = {"teacher (zero-shot)": teacher, "plain PEFT": baseline, "InfoSAM": student}
    shown = write_overlays(models, data["target"] / "test", out / "overlays", settings.overlays)
    lap("evaluate")
    say(f"[4/4] evaluated and drew {len(shown)} overlay(s) ({seconds['evaluate']} s)")

    result = DemoResult(out, checkpoint, run_dir, baseline_dir, rows, table, shown, seconds)
    atomic_write_text(out / "results.md", table + "\n")
    summary = {"rows": rows, "seconds": seconds, "settings": asdict(settings)}
    write_json(out / "results.json", summary)
    return result


def make_data(root: Path, settings: DemoSettings) -> dict[str, Path]:
    """Source train/test sets and a target folder with ``train/`` and ``test/`` splits (disjoint indices)."""
    s, seed = settings, settings.seed
    write_synthetic_dataset(root / "source" / "train", s.source_train, domain="source", seed=seed)
    write_synthetic_dataset(
        root / "source" / "test", s.source_test, domain="source", seed=seed, start=s.source_train
    )
    write_synthetic_dataset(root / "target" / "train", s.target_train, domain="target", seed=seed)
    write_synthetic_dataset(
        root / "target" / "test", s.target_test, domain="target", seed=seed, start=s.target_train
    )
    return {
        "source_train": root / "source" / "train",
        "source_test": root / "source" / "test",
        "target": root / "target",
    }


def _load_all(folder: Path) -> tuple[Tensor, Tensor]:
    """Every pair of a folder dataset as SAM inputs: images (N, 3, S, S) and masks (N, 1, S, S)."""
    dataset = open_dataset(folder, transform=get_transform(get_spec("tiny")))
    samples = [dataset[i] for i in range(len(dataset))]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["mask"] for s in samples])


def pretrain_teacher(source: Path, settings: DemoSettings) -> Sam:
    """A tiny SAM trained from scratch, all parameters, on box prompts of the source domain (the demo's stand-in
    for Meta's pretraining). Returns it in eval mode."""
    images, masks = _load_all(source)
    model = build_base("tiny", seed=settings.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.pretrain_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.pretrain_lr, total_steps=settings.pretrain_steps
    )
    generator = torch.Generator().manual_seed(settings.seed)
    for _ in range(settings.pretrain_steps):  # the training step's phases, without a teacher
        index = torch.randint(len(images), (settings.pretrain_batch,), generator=generator)
        boxes = noisy_box(masks[index], generator, max_shift=3)
        output = sam_forward(model, images[index], boxes=boxes)
        terms = step_losses(output, None, masks[index], seg_loss="structure")
        terms["loss"].backward()
        optimizer_step(optimizer, schedule)
    model.requires_grad_(False)
    return model.eval()


def finetune_config(
    target: Path, checkpoint: Path, run_dir: Path, settings: DemoSettings, *, infosam: bool = True
):
    """The InfoSAM run: adapter+decoder student of ``checkpoint``, L_r + L_d on, the target train/test splits; with
    ``infosam=False`` the plain PEFT baseline (no teacher), everything else the same."""
    config = config_from_dict(
        {
            "model": {"name": "tiny", "checkpoint": str(checkpoint)},
            "peft": {"methods": "adapter+decoder"},
            "data": {"path": str(target), "train_split": "train", "test_split": "test"},
            "train": {
                "lr": settings.finetune_lr,
                "min_lr": settings.finetune_lr / 10,
                "batch_size": settings.finetune_batch,
                "epochs": settings.finetune_epochs,
                "seed": settings.seed,
                "cpu": True,
                "log_every_steps": 5,
                "save_every_steps": 10_000,
            },
            "infosam": {"enabled": infosam},
            "eval": {"last_epochs": 1, "batch_size": 8, "seed": settings.seed},
            "output": str(run_dir),
        }
    )
    config.validate()
    return config


INFOSAM_ROW = "InfoSAM fine-tuned (adapter+decoder)"
BASELINE_ROW = "plain PEFT fine-tuned (adapter+decoder, no teacher)"


def score(
    teacher: Sam, student: Sam, data: dict[str, Path], settings: DemoSettings, *, baseline: Sam | None = None
) -> list[dict]:
    """Table rows: the teacher on source (sanity) and target (zero-shot), the plain PEFT student (when given) and
    the InfoSAM student on target."""
    transform = get_transform(student.spec)
    source_test = open_dataset(data["source_test"], transform=transform)
    target_test = open_dataset(data["target"], split="test", transform=transform)
    runs = [
        ("teacher (tiny SAM, source-pretrained)", "source test", teacher, source_test),
        ("teacher zero-shot", "target test", teacher, target_test),
    ]
    if baseline is not None:
        runs.append((BASELINE_ROW, "target test", baseline, target_test))
    runs.append((INFOSAM_ROW, "target test", student, target_test))
    rows = []
    for name, domain, model, dataset in runs:
        _, summary = evaluate(model, dataset, prompt="box", seed=settings.seed, batch_size=8)
        rows.append({"model": name, "domain": domain, **{m: float(summary[m]) for m in TABLE_METRICS}})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows as a Markdown table, metrics in percent."""
    head = "| model | data | " + " | ".join(TABLE_METRICS) + " |"
    rule = "|---|---|" + "---|" * len(TABLE_METRICS)
    body = [
        f"| {r['model']} | {r['domain']} | " + " | ".join(f"{100 * r[m]:.1f}" for m in TABLE_METRICS) + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *body])


OVERLAY_SCALE = 3
"""Overlay panels are upscaled (nearest) by this factor so the 64-pixel demo images and their captions read."""


def write_overlays(models: dict[str, Sam], test_dir: Path, out: Path, count: int) -> list[Path]:
    """For the first ``count`` test images: ``<stem>.png`` = image | ground truth | one overlay per model of
    ``models`` (caption -> model), each panel captioned and each overlay with the (tight) box prompt drawn."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image_path in sorted((test_dir / "images").glob("*.png"))[:count]:
        image, info = read_image(image_path)
        truth = read_mask(test_dir / "masks" / image_path.name, info)
        prompt = Prompt(box=tuple(tight_box(truth).tolist()))
        panels = {"image": Image.fromarray(image), "ground truth": overlay(image, truth, prompt)}
        for caption, model in models.items():
            panels[caption] = overlay(image, predict_logits(model, image, prompt) > 0, prompt)
        path = out / image_path.name
        atomic_save_image(path, captioned_strip(panels))
        written.append(path)
    return written


def captioned_strip(panels: dict[str, Image.Image], scale: int = OVERLAY_SCALE) -> Image.Image:
    """The panels side by side, each upscaled ``scale`` times (nearest) under a white bar with its caption."""
    from PIL import ImageDraw

    width, height = (side * scale for side in next(iter(panels.values())).size)
    bar = 14
    strip = Image.new("RGB", (width * len(panels), height + bar), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, (caption, panel) in enumerate(panels.items()):
        strip.paste(panel.resize((width, height), Image.Resampling.NEAREST), (i * width, bar))
        draw.text((i * width + 3, 2), caption, fill=(0, 0, 0))
    return strip
