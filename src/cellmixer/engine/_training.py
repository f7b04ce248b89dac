"""The optimisation loop shared by every kind of model: progress, checkpoints, Ctrl-C, validation."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .._errors import CellmixerError, out_of_memory
from .._progress import note, notes_held, progress_bar
from .._settings import check_mapping, check_settings, flag_of, given_settings, setting, spec
from ..io import output_locks, prepare_output_dir
from ..models import (
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    VisionTransformer,
    check_network,
    load_pretrained_encoder,
)
from ._checkpoint import (
    STATE_JSON,
    read_checkpoint_meta,
    recover_checkpoint,
    remove_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from ._device import PRECISIONS, autocast, describe_device, resolve_device, resolve_precision, to_device
from ._distributed import Distributed
from ._method import method_by_task
from ._model import check_model_config
from ._record import CURVE_FILE, LOG_FILE, write_training_record

# The sub-folder of a model folder that holds the training state, to resume or extend a run.
CHECKPOINT_DIR = "checkpoint"


class TrainingInterrupted(CellmixerError):
    """Training stopped by the user; a checkpoint was written."""


class _StopRequest:
    requested = False


@contextlib.contextmanager
def _stop_on_interrupt():
    """The first Ctrl-C lets the current iteration finish, so the checkpoint written then is exactly
    the state an uninterrupted run has at that iteration; a second Ctrl-C stops at once."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        print("\nstopping after this iteration and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class OptimizationSettings:
    """Settings of the optimisation itself, shared by every kind of training (each method's settings
    class adds its own and may change a default with :func:`setting_like`)."""

    iterations: int = setting(2000, "optimisation steps", at_least=1)
    batch_size: int = setting(8, "crops per step", at_least=1)
    crop_size: int = setting(256, "crop side in pixels", at_least=16, at_most=4096)
    optimizer: str = setting("sgd", "", choices=("sgd", "adam"))
    learning_rate: float = setting(1e-3, "", above=0)
    momentum: float = setting(0.9, "SGD momentum", at_least=0, below=1)
    weight_decay: float = setting(0.0, "", at_least=0)
    lr_schedule: str = setting("constant", "", choices=("constant", "poly"))
    augment: bool = setting(True, "flips and rotations, blur, noise, brightness and contrast", flag="--no-augment")
    precision: str = setting("auto", "network arithmetic during training", choices=PRECISIONS, cli=False)
    seed: int = setting(0, "seeds the weights, the sampling and the augmentation", at_least=0, at_most=2**32 - 1)
    checkpoint_every: int = setting(250, "iterations between checkpoints", at_least=1)
    # Architectures with a pretrained encoder (segmenter, vit-linear): where its weights come from, and
    # whether it is frozen or fine-tuned at learning_rate * encoder_lr_scale. Their options are the
    # network's ("pretrained encoder" group of the command line).
    pretrained: str | None = setting(None, "DINOv2 weights: a .pth or .safetensors file (official or Hugging Face "
                                           "naming), or a name such as dinov2_vits14 or facebook/dinov2-small "
                                           "(downloaded once)", kind=str, metavar="FILE|NAME")
    freeze_encoder: bool = setting(False, "train the decoder only")
    encoder_lr_scale: float = setting(1.0, "fine-tune the encoder at this fraction of --learning-rate", above=0)

    @staticmethod
    def bad(option: str, value, need: str):
        raise CellmixerError(f"--{option.replace('_', '-')} {value}: {need}.")

    def validate(self) -> None:
        """Check every setting against its declaration (subclasses add checks across settings)."""
        check_settings(self)

    def learning_rate_at(self, iteration: int) -> float:
        if self.lr_schedule == "poly":
            return self.learning_rate * (1 - iteration / self.iterations) ** 0.9
        return self.learning_rate


def refuse_existing_model(out: Path, checkpoint_dir: Path) -> None:
    """A model or checkpoint already in ``out`` is replaced only with ``--overwrite``."""
    existing = [p for p in (out / CONFIG_FILE, out / WEIGHTS_FILE, checkpoint_dir) if p.exists()]
    if existing:
        hint = "pass --resume to continue its checkpoint, " if checkpoint_dir.exists() else ""
        raise CellmixerError(f"{out}: already holds a model ({existing[0].name}); {hint}pass --overwrite to "
                             "replace it, or choose another output folder.")


# Settings a resumed run may change (said when it does): how often it checkpoints, and its arithmetic (a
# run resumed on another device). A larger --iterations extends the run; any other setting is the run's.
CHANGEABLE_ON_RESUME = ("checkpoint_every", "precision")


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def resume_settings(checkpoint_dir, settings_class, *, task: str | None, given: dict | None = None,
                    conflicts=None, defaults: dict | None = None):
    """The metadata of a checkpoint to resume and its training settings (``settings_class``, with
    ``defaults`` for settings older checkpoints lack), both checked. A checkpoint of another kind of
    training is refused, naming the command that resumes it.

    ``given`` are the settings given for the resumed run: a larger ``iterations`` extends it and the
    settings of :data:`CHANGEABLE_ON_RESUME` are applied (both are said); any other that differs
    from the stored run is refused, as are the
    ``conflicts(meta)`` found besides the settings (``(option with its value, stored value)``, e.g.
    :meth:`Training.resume_conflicts`).
    """
    checkpoint_dir = Path(checkpoint_dir)
    meta = read_checkpoint_meta(checkpoint_dir)
    path = checkpoint_dir / STATE_JSON
    found = method_by_task(meta.get("task"))
    if found is None or found.task != task:
        what = f"the training of a {found.model_title}" if found else f"a training of unknown kind {meta.get('task')!r}"
        how = f"; resume it with `{found.train_command} --resume`" if found else ""
        raise CellmixerError(f"--resume: {checkpoint_dir} is {what}{how}.")
    stored = {**(defaults or {}), **meta["training"]}
    model_keys = ("task", "classes", "architecture", "normalization", "channel", "input_scale")
    fix = "train again without --resume"
    try:
        check_mapping(settings_class, stored, key="training", required=True)
        check_network(meta.get("architecture"), source=str(path))
    except CellmixerError as exc:
        raise CellmixerError(f"{path}: damaged checkpoint ({str(exc).rstrip('.')}); {fix}.") from None
    check_model_config({"format": FORMAT, **{k: meta[k] for k in model_keys if k in meta}}, path, fix=fix)
    config = settings_class(**{f.name: stored[f.name] for f in fields(settings_class)})
    differ = list(conflicts(meta)) if conflicts is not None else []
    options = {f.name: f for f in fields(settings_class)}
    for name in [n for n in options if n in (given or {})]:
        value = given[name]
        if not spec(options[name]).get("cli") and name != "precision":
            continue  # made from other arguments (a method's own): the stored run's are kept
        old = getattr(config, name)
        if _shown(value) == _shown(old):
            continue
        flag = flag_of(options[name])
        if name == "iterations":
            if value < old:
                raise CellmixerError(f"--resume: --iterations {value} is fewer than the {old} of the run in "
                                     f"{checkpoint_dir.parent}; leave it out to finish that run, or give more to "
                                     "extend it.")
            note(f"extending the run in {checkpoint_dir.parent} from {old} to {value} iterations.")
        elif name in CHANGEABLE_ON_RESUME:
            note(f"the resumed run uses {flag} {_shown(value)} (it had {_shown(old)}).")
        else:
            differ.append((f"{flag} {_shown(value)}", _shown(old)))
            continue
        setattr(config, name, value)
    if differ:
        options = " and ".join(option for option, _ in differ[:3])
        stored_values = ", ".join(stored for _, stored in differ[:3])
        raise CellmixerError(f"--resume: {options} differ{'s' if len(differ) == 1 else ''} from the run in "
                             f"{checkpoint_dir.parent} ({stored_values}); leave {'it' if len(differ) == 1 else 'them'} "
                             "out to continue that run, or pass --overwrite to start a new one.")
    return meta, config


def stored_architecture(meta: dict) -> tuple[str, dict]:
    """Architecture name and options of a checkpoint."""
    spec = meta["architecture"]
    return spec["name"], {k: v for k, v in spec.items() if k not in ("name", "in_channels", "num_classes")}


def load_pretrained(network, config) -> None:
    """Start a new run from pretrained encoder weights (``config.pretrained``), if any."""
    if config.pretrained:
        load_pretrained_encoder(network, config.pretrained)


def parameter_groups(config, network) -> list[dict]:
    """The network's trainable parameters, in groups with their own learning-rate factor (``lr_scale``).

    Networks with a pretrained encoder (a ViT ``encoder``) get two groups, the encoder's at
    ``encoder_lr_scale``; a frozen encoder (``freeze_encoder``) is left out and stops tracking
    gradients. Other networks have one group.
    """
    encoder = getattr(network, "encoder", None)
    if not isinstance(encoder, VisionTransformer):
        for option, value, default in (("freeze_encoder", config.freeze_encoder, False),
                                       ("encoder_lr_scale", config.encoder_lr_scale, 1.0),
                                       ("pretrained", config.pretrained, None)):
            if value != default:
                raise CellmixerError(f"--{option.replace('_', '-')}: the {type(network).__name__} network has no "
                                     "pretrained encoder; use --model segmenter or --model vit-linear.")
        return [{"params": list(network.parameters()), "lr_scale": 1.0}]
    encoder.requires_grad_(not config.freeze_encoder)
    inside = {id(p) for p in encoder.parameters()}
    groups = [{"params": [p for p in network.parameters() if id(p) not in inside], "lr_scale": 1.0}]
    if not config.freeze_encoder:
        groups.append({"params": list(encoder.parameters()), "lr_scale": config.encoder_lr_scale})
    return groups


def make_optimizer(config, network):
    """SGD or Adam over :func:`parameter_groups`; the loop sets each group's rate to the scheduled
    rate times its ``lr_scale``."""
    groups = parameter_groups(config, network)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay)


class Optimization:
    """One training run of ``network``: the optimiser, the random state, the loss history and, with
    a validation function, the weights that scored best on it — everything a checkpoint holds.

    Parameters
    ----------
    network : torch.nn.Module
    config : TrainingConfig
        Iterations, batch size, optimiser, learning-rate schedule, precision, seed, checkpoint period.
    checkpoint_dir : Path
    meta : dict
        What else the checkpoint must remember to rebuild the run (classes, architecture, settings).
    device : str or torch.device
        Where the network trains; checkpoints hold CPU tensors, so a run resumes on any device.
    distributed : Distributed, optional
        This process's place in a run of several (torchrun): it trains on its share of each batch
        in DistributedDataParallel, and only process 0 writes checkpoints.
    """

    def __init__(self, network, config, checkpoint_dir: Path, meta: dict, *, device="cpu",
                 distributed: Distributed | None = None):
        self.device = resolve_device(device)
        self.network = network.to(self.device)
        self.distributed = distributed
        self.trained = distributed.wrap(self.network, self.device) if distributed else self.network
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir)
        self.meta = meta
        self.optimizer = make_optimizer(config, network)
        self.rng = np.random.default_rng(config.seed)
        self.history: list[dict] = []
        self.iteration = 0
        self.checkpointed = 0  # iteration of the last checkpoint
        self.best: dict | None = None  # {"iteration", "validation_loss", "state"}

    def resume(self, stored: dict) -> None:
        """Continue from the checkpoint whose ``state.json`` is ``stored``."""
        self.best = restore_checkpoint(self.checkpoint_dir, stored, network=self.network, optimizer=self.optimizer,
                                       rng=self.rng)
        self.history, self.iteration = stored["history"], stored["iteration"]
        self.checkpointed = self.iteration

    def checkpoint(self) -> None:
        """Write the training state as one unit (:func:`save_checkpoint`); weights that are no longer
        finite are refused instead."""
        if not all(bool(torch.isfinite(p).all()) for p in self.network.parameters()):  # the same in every process
            self._diverged("the weights are no longer finite numbers")
        if self.distributed is not None and not self.distributed.is_main:
            return  # process 0 writes the run's checkpoint
        save_checkpoint(self.checkpoint_dir, network=self.network, optimizer=self.optimizer, rng=self.rng,
                        iteration=self.iteration, history=self.history, meta=self.meta, best=self.best)
        self.checkpointed = self.iteration

    def _finite(self, loss) -> bool:
        """Whether the loss is finite in every process (each has its share of the batch): all stop together."""
        finite = torch.isfinite(loss.detach()).all().to(torch.int32)
        if self.distributed is not None:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite)

    def _diverged(self, what: str):
        """Stop a run whose loss or weights became NaN or infinite, naming the likely cause."""
        config = self.config
        arithmetic = "" if config.precision == "fp32" else f", or train in --precision fp32 (not {config.precision})"
        kept = f"its checkpoint of iteration {self.checkpointed} is kept" if self.checkpointed else "nothing was saved"
        raise CellmixerError(f"training diverged at iteration {self.iteration + 1}: {what}; lower --learning-rate "
                             f"(it is {config.learning_rate:g}){arithmetic} ({kept}).")

    def _validate(self, validate) -> float:
        self.network.eval()
        try:
            with out_of_memory("validation", "lower --batch-size or --crop-size"):
                loss = float(validate(self.network))
        finally:
            self.network.train()
        if self.best is None or loss < self.best["validation_loss"]:
            state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.network.state_dict().items()}
            self.best = {"iteration": self.iteration, "validation_loss": loss, "state": state}
        return loss

    def run(self, next_batch, loss_fn, *, validate=None, desc: str = "training", progress: bool = True,
            start_time: float | None = None) -> None:
        """Optimise until ``config.iterations``.

        ``next_batch(rng, batch_size)`` gives numpy ``(images (B, 1, S, S), targets (B, S, S))``;
        ``loss_fn(logits, targets)`` the loss. ``validate(network)``, if given, returns the loss on
        held-out data; it runs at every checkpoint, and the best weights are kept (:attr:`best`).
        """
        config, network, opt = self.config, self.trained, self.optimizer
        start_time = time.perf_counter() if start_time is None else start_time
        device = self.device
        # float16 needs its gradients scaled against underflow; a disabled scaler is a plain step.
        scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        network.train()
        bar = progress_bar(total=config.iterations, initial=self.iteration, desc=f"{desc} on {describe_device(device)}",
                           unit="it", enabled=progress)
        with _stop_on_interrupt() as stop:
            while self.iteration < config.iterations:
                lr = config.learning_rate_at(self.iteration)
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                images, targets = next_batch(self.rng, config.batch_size)
                if self.distributed is not None:
                    images, targets = self.distributed.share(images, targets)
                with out_of_memory(f"training batch of {len(images)} crops of {images.shape[-2]}x{images.shape[-1]} "
                                   "pixels", "lower --batch-size or --crop-size"):
                    x = to_device(images, device, channels_last=True)
                    with autocast(config.precision, device):
                        logits = network(x)
                    loss = loss_fn(logits, to_device(targets, device))
                    if not self._finite(loss):  # before the step: the weights stay as they were
                        self._diverged(f"the loss is {loss.item()}")
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                self.iteration += 1
                entry = {"iteration": self.iteration, "loss": round(loss.item(), 6), "learning_rate": lr}
                self.history.append(entry)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean([h['loss'] for h in self.history[-20:]]):.4f}")
                due = self.iteration % config.checkpoint_every == 0 or self.iteration == config.iterations
                if validate is not None and due:
                    entry["validation_loss"] = round(self._validate(validate), 6)
                    bar.set_postfix(loss=f"{np.mean([h['loss'] for h in self.history[-20:]]):.4f}",
                                    val=f"{entry['validation_loss']:.4f}")
                entry["elapsed_s"] = round(time.perf_counter() - start_time, 2)
                if due or stop.requested:
                    self.checkpoint()
                if stop.requested:
                    bar.close()
                    raise TrainingInterrupted(
                        f"training stopped at iteration {self.iteration}; checkpoint saved in {self.checkpoint_dir}, "
                        "run the same command with --resume to continue.")
        bar.close()
        network.eval()



class Training:
    """The outline of every training: settings, output folder, resume or refuse, data, new model,
    pretrained weights, threads, the optimisation loop with checkpoints and validation selection,
    save and record. A method subclasses it and supplies the hooks (as StarDist's models supply
    their network and post-processing to its base class); :meth:`fit` runs the outline.

    Parameters
    ----------
    config : OptimizationSettings
        The method's settings (a subclass); checked here, and replaced by the stored ones on resume.
    output : str or Path
        The model folder.
    device, threads, resume, overwrite, progress :
        As for :func:`cellmixer.train`.
    """

    task: str | None = None            # the "task" its model folders record (its Method's)
    description: str = "training"      # progress bar
    loss_name: str = "loss"            # y label of the training curve
    selects_best: bool = False         # keep the weights with the lowest validation loss
    resume_defaults: dict | None = None  # settings that older checkpoints lack
    # model.config entries that a checkpoint keeps to rebuild the run
    checkpoint_keys = ("task", "types", "classes", "architecture", "normalization", "channel", "input_scale",
                       "pixel_size")

    def __init__(self, config: OptimizationSettings, output, *, device="auto", threads: int | None = None,
                 resume: bool = False, overwrite: bool = False, progress: bool = True):
        self.start_time = time.perf_counter()
        self.device = resolve_device(device)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise CellmixerError(f"--threads {threads}: must be at least 1 (default: all cores).")
        self.config = config
        self.config.precision = self.config_precision = resolve_precision(self.config.precision, self.device)
        self.config.validate()
        self.output, self.threads, self.resume, self.overwrite, self.progress = output, threads, resume, overwrite, \
            progress

    # ------------------------------------------------------------------ hooks of a method
    def restore(self, meta: dict) -> None:
        """Take what the method needs from a resumed checkpoint's ``meta`` (its inputs, architecture)."""

    def prepare(self) -> None:
        """Read the data and check it (input errors are raised here, before any training)."""

    def new_model(self):
        """The untrained :class:`~cellmixer.engine.SegmentationModel`."""
        raise NotImplementedError

    def objective(self, model):
        """``(next_batch, loss_fn, validate)`` for :meth:`Optimization.run`; ``validate`` may be None."""
        raise NotImplementedError

    def checkpoint_extras(self) -> dict:
        """What else a checkpoint must hold to resume (e.g. the training images)."""
        return {}

    def summary(self) -> dict:
        """Entries of ``config["training"]`` besides the settings (data, counts)."""
        return {}

    def title(self) -> str:
        """Title of the training curve."""
        return self.description

    # ------------------------------------------------------------------ the outline
    def resume_conflicts(self, meta: dict) -> list[tuple[str, str]]:
        """Options given to this run, besides its settings, that differ from the run being resumed:
        ``(option with its value, stored value)``. The base class compares the architecture options
        (``self.model_options``) and the channel (``self.channel``); a method adds its own."""
        found = []
        spec = meta.get("architecture") or {}
        for key, value in (getattr(self, "model_options", None) or {}).items():
            if value is not None and spec.get(key) != value:
                found.append((f"--{key.replace('_', '-')} {_shown(value)}", _shown(spec.get(key))))
        channel = getattr(self, "channel", None)
        if channel is not None and channel != meta.get("channel"):
            found.append((f"--channel {channel}", f"channel {meta.get('channel')}"))
        return found

    def fit(self):
        """Train (or resume), save the model folder and its record; returns the model. The model
        folder is locked while it runs (:func:`cellmixer.io.prepare_output_dir`); what the run says
        about its settings is said once its inputs are checked (:func:`notes_held`). Under torchrun,
        each process trains on its share of every batch and process 0 saves (see engine._distributed)."""
        distributed = Distributed.from_environment()
        if distributed is None:
            return self._fit(None)
        self.device = distributed.device(self.device)
        distributed.check_batch(self.config.batch_size)
        distributed.start(self.device)
        self.progress = self.progress and distributed.is_main
        try:
            return self._fit(distributed)
        finally:
            distributed.stop()

    def _fit(self, distributed: Distributed | None):
        # Process 0 holds the folder's lock for the run (the others of a torchrun run read and train only).
        main = distributed is None or distributed.is_main
        with output_locks() if main else contextlib.nullcontext():
            with notes_held():
                out, model, run, (next_batch, loss_fn, validate) = self._start(distributed)
            run.run(next_batch, loss_fn, validate=validate, desc=self.description, progress=self.progress,
                    start_time=self.start_time)
            return self._finish(out, model, run, distributed)

    def _start(self, distributed: Distributed | None):
        """Everything before the optimisation loop: the folder, the resumed run or the refusal, the data,
        the model, the objective."""
        config = self.config
        out = prepare_output_dir(self.output)
        checkpoint_dir = out / CHECKPOINT_DIR
        meta = None
        recover_checkpoint(checkpoint_dir)
        if self.resume and not (checkpoint_dir / STATE_JSON).exists():
            if (out / CONFIG_FILE).exists():
                raise CellmixerError(f"--resume: {out} holds a finished model but no checkpoint to continue; pass "
                                     "--overwrite to train a new one, or choose another output folder.")
            # a run killed before its first checkpoint (or none at all): what is left to do is all of it
            note(f"no checkpoint in {out} to resume: the run starts from the beginning.")
            self.resume = False
        if self.resume:
            given = {name: getattr(config, name) for name in given_settings(config)}
            meta, self.config = resume_settings(checkpoint_dir, type(config), task=self.task, given=given,
                                                conflicts=self.resume_conflicts, defaults=self.resume_defaults)
            config = self.config
            if "precision" not in given:
                try:  # the run's own arithmetic, where this device has it (a GPU's fp16 does not run on a CPU)
                    config.precision = resolve_precision(config.precision, self.device)
                except CellmixerError:
                    note(f"this device cannot train in the run's {config.precision}; it continues in "
                         f"{self.config_precision}.")
                    config.precision = self.config_precision
            config.validate()  # the stored settings, as strictly as given ones
            try:
                self.restore(meta)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CellmixerError(f"{checkpoint_dir / STATE_JSON}: damaged checkpoint (a missing or wrong entry: "
                                     f"{exc}); train again without --resume.") from None
        elif not self.overwrite:
            refuse_existing_model(out, checkpoint_dir)
        if meta is None:  # the network and its size, before any data is read (a resumed run has its own); the
            # number of classes, unknown yet, only sizes the last layer: any in every architecture's range will do
            options = getattr(self, "model_options", None) or {}
            check_network({"name": getattr(self, "architecture", "unet"), **options, "in_channels": 1,
                           "num_classes": 17})
        with out_of_memory("preparing the training images", "use fewer or smaller images (or --scale 0.5)"):
            self.prepare()
        model = self.new_model()
        if self.task is not None:
            model.config["task"] = self.task
        if meta is None:  # a resumed run has its weights in the checkpoint
            load_pretrained(model.network, config)
        processes = distributed.world_size if distributed else 1
        torch.set_num_threads(self.threads or max(1, (os.cpu_count() or 1) // processes))
        next_batch, loss_fn, validate = self.objective(model)
        checkpoint_meta = {key: model.config[key] for key in self.checkpoint_keys if key in model.config}
        checkpoint_meta.update(self.checkpoint_extras(), training=asdict(config))
        run = Optimization(model.network, config, checkpoint_dir, checkpoint_meta, device=self.device,
                           distributed=distributed)
        if meta is not None:
            run.resume(meta)
        elif self.overwrite and (distributed is None or distributed.is_main):
            # The old run goes as this one starts (its inputs are checked by now): killed before its first
            # checkpoint, this run leaves nothing of the old one to be resumed or mistaken for its result.
            remove_checkpoint(checkpoint_dir)
            for name in (CONFIG_FILE, WEIGHTS_FILE, LOG_FILE, CURVE_FILE):
                (out / name).unlink(missing_ok=True)
        return out, model, run, (next_batch, loss_fn, validate)

    def _finish(self, out, model, run, distributed: Distributed | None):
        """The model folder of a run that reached its iterations: the weights kept, config, record."""
        config = self.config
        if run.best is not None:
            model.network.load_state_dict(run.best["state"])
        model.network.eval()
        history = run.history
        record = {**asdict(config), **self.summary()}
        if self.selects_best:
            record["selected_iteration"] = run.best["iteration"] if run.best else run.iteration
            record["validation_loss"] = round(run.best["validation_loss"], 6) if run.best else None
        record["final_loss"] = float(np.mean([h["loss"] for h in history[-50:]])) if history else None
        record["wall_time_s"] = round(time.perf_counter() - self.start_time, 1)
        model.config["training"] = record
        if distributed is not None:
            record["processes"] = distributed.world_size
            if not distributed.is_main:
                return model  # process 0 writes the model folder
        model.save(out, overwrite=True)
        write_training_record(out, history, ylabel=self.loss_name, title=self.title())
        return model
