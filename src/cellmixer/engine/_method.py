"""The registry of methods: what kind of model a folder holds, and which command made it.

A method is a folder under ``cellmixer/methods/`` with one :class:`Method` subclass, registered by
:func:`register_method`. The kind of a model is its method, found from ``config["task"]`` once, here.
"""

from __future__ import annotations

from pathlib import Path

from .._errors import CellmixerError
from ..models import CONFIG_FILE
from ._model import SegmentationModel

METHODS: dict[str, type["Method"]] = {}


class Method:
    """A way of training and using a model (subclass per method; the attributes are its identity).

    Attributes
    ----------
    name : str
        The command group (``cellmixer nuclei ...``); ``'cellmixer'`` for the top-level commands.
    task : str or None
        The ``"task"`` a model folder of this method records (None: CellMixer's, as older folders).
    model_title : str
        What its model is called in messages (``'nucleus model'``).
    train_command : str
        The command that trains such a model.
    config : type
        Its training settings (a dataclass, saved as ``config["training"]``).
    """

    name: str = ""
    task: str | None = None
    model_title: str = ""
    train_command: str = ""
    config: type | None = None

    @classmethod
    def owns(cls, model: SegmentationModel) -> bool:
        return model.config.get("task") == cls.task

    @classmethod
    def check_config(cls, config: dict) -> None:
        """Refuse a model configuration whose entries of this method (beyond :class:`ModelConfig`) are not
        what it needs, naming the key (a :class:`CellmixerError`); called when a model is loaded."""


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` known by its ``name`` and its models' ``task``."""
    if any(m.task == cls.task and m.name != cls.name for m in METHODS.values()):
        raise ValueError(f"two methods record task {cls.task!r}")
    METHODS[cls.name] = cls
    return cls


def method_of(model: SegmentationModel | dict) -> type[Method]:
    """The method whose model ``model`` (or its config dict) is."""
    task = (model.config if isinstance(model, SegmentationModel) else model).get("task")
    for method in METHODS.values():
        if method.task == task:
            return method
    raise CellmixerError(f"model of unknown kind {task!r}; it was written by another version of cellmixer.")


def method_by_task(task: str | None) -> type[Method] | None:
    """The method that records ``task``, or None."""
    return next((m for m in METHODS.values() if m.task == task), None)


def load_model(model, *, methods, device=None, option: str = "MODEL") -> SegmentationModel:
    """A model (a folder or a loaded model) of one of ``methods`` (names), on ``device``.

    A model of another kind is refused with a line naming the folder, what it is, and the command
    that trains the kind wanted.
    """
    source = None if isinstance(model, SegmentationModel) else Path(model)
    if source is not None:
        model = SegmentationModel.load(source, device=device)
    elif device is not None:
        model.to(device)
    try:
        found = method_of(model)
        found.check_config(model.config)
    except CellmixerError as exc:
        if source is None:
            raise
        raise CellmixerError(f"{source / CONFIG_FILE}: {str(exc).rstrip('.')}; restore the file from the trained "
                             "model.") from None
    if found.name not in methods:
        wanted = [METHODS[name] for name in methods if name in METHODS]
        where = f"{source}" if source is not None else option
        kinds = " or ".join(m.model_title for m in wanted)
        commands = " or ".join(f"`{m.train_command}`" for m in wanted)
        raise CellmixerError(f"{where}: a {found.model_title}, not a {kinds}; give a model trained by {commands}.")
    return model
