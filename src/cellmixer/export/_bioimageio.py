"""A trained model as a bioimage.io model package: rdf.yaml, weights (state dict with its architecture
source, and TorchScript), test tensors, cover image and documentation, in one zip."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .._errors import CellmixerError
from .._version import __version__
from ..demo import synthetic_culture, synthetic_nuclear_stain
from ..engine import SegmentationModel, method_of
from ..io import (
    add_legend,
    atomic_path,
    class_colors,
    overlay_labels,
    read_image,
    read_nuclear,
    to_uint8,
    write_png,
    write_text,
)
from ._network import NETWORKS, ExportedNetwork
from ._source import network_source

EXTRA = "pip install 'cellmixer[bioimageio]'"
ARCHITECTURE_FILE, STATE_DICT_FILE, TORCHSCRIPT_FILE = "cellmixer_network.py", "weights.pt", "weights_torchscript.pt"
TEST_SIDE, MIN_SIDE = 256, 32  # test input side: at most one tile of every model
CELLMIXER_PAPER = {"text": "M. Naouar et al., CellMixer: Annotation-free Semantic Cell Segmentation of Heterogeneous "
                           "Cell Populations (2023)", "url": "https://arxiv.org/abs/2312.00671"}
# The paper each kind of model follows (besides the package). A citation needs a DOI or URL: where the
# paper's own is not at hand, the public code or data it describes.
METHOD_PAPERS = {
    "cellmixer": CELLMIXER_PAPER,
    "typed": CELLMIXER_PAPER,
    "nuclei": {"text": "D. J. Matuszewski, P. Ranefall, Learning cell nuclei segmentation using labels generated with "
                       "classical image analysis methods, WSCG 2021 (data: BBBC039)",
               "url": "https://bbbc.broadinstitute.org/BBBC039"},
    "centroids": {"text": "K. Nishimura, D. F. E. Ker, R. Bise, Weakly supervised cell instance segmentation by "
                          "propagating from detection response, MICCAI 2019 (code: WSISPDR)",
                  "url": "https://github.com/naivete5656/WSISPDR"},
}


def _spec():
    """bioimageio.spec's model description classes (the optional extra ``[bioimageio]``)."""
    try:
        from bioimageio.spec import ValidationContext, save_bioimageio_package
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise CellmixerError(f"--bioimageio needs bioimageio.spec: {EXTRA}") from None
    return v0_5, save_bioimageio_package, ValidationContext


def output_channels(model: SegmentationModel) -> list[str]:
    """Names of the exported model's output channels, in order."""
    if method_of(model).name == "centroids":
        return ["cell centre likelihood"]
    return ["background", *model.classes]  # a typed model's classes: its instance classes, then its types


def exported_background(model: SegmentationModel) -> dict | None:
    """The foreground settings of CellMixer's background normalization, built into the exported network; None
    for the normalizations bioimage.io has as standard preprocessing."""
    normalization = model.config["normalization"]
    if normalization.get("method", "background") != "background":
        return None
    return dict(normalization.get("foreground", {}))


def exported_network(model: SegmentationModel) -> ExportedNetwork:
    """The model's network in an :class:`ExportedNetwork` (CPU, eval mode), with its normalization built in
    where bioimage.io has no standard preprocessing for it (CellMixer's background normalization)."""
    network = ExportedNetwork(model.config["architecture"], exported_background(model), model.input_scale,
                              model.nuclear_input)
    network.network.load_state_dict({k: v.cpu() for k, v in model.network.state_dict().items()})
    return network.eval()


def standard_preprocessing(image: np.ndarray, normalization: dict) -> np.ndarray:
    """What bioimage.io's standard preprocessing of the exported model does to ``image`` (float32)."""
    image = np.asarray(image, np.float32)
    method = normalization.get("method", "background")
    if method == "percentile":
        low, high = np.percentile(image, [normalization.get("low", 1.0), normalization.get("high", 99.8)])
        return ((image - low) / (high - low + 1e-6)).astype(np.float32)
    if method == "tile":
        return ((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32)
    return image


def _preprocessing(v0_5, normalization: dict) -> list:
    axes = [v0_5.AxisId("y"), v0_5.AxisId("x")]
    method = normalization.get("method", "background")
    if method == "percentile":
        return [v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
            axes=axes, min_percentile=normalization.get("low", 1.0), max_percentile=normalization.get("high", 99.8),
            eps=1e-6))]
    if method == "tile":
        return [v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=axes, eps=1e-6))]
    return []


def _normalization_text(model: SegmentationModel) -> str:
    normalization = model.config["normalization"]
    method = normalization.get("method", "background")
    stain = (" The second channel, the nuclear stain, is normalized inside the network by its own nuclei (the "
             "background at 0 and the median nucleus pixel at 1, the two sides of Otsu's threshold), so that its "
             "exposure does not matter." if model.nuclear_input else "")
    if method == "background":
        return ("The input is the raw image: CellMixer's background normalization is built into the network (it "
                "finds the cells without supervision, takes the mean and standard deviation of the background "
                "pixels and subtracts and divides by them, with the settings the model was trained with), "
                "because bioimage.io has no standard preprocessing for it. Give whole images: the statistics "
                "are those of the input." + stain)
    if method == "percentile":
        low, high = normalization.get("low", 1.0), normalization.get("high", 99.8)
        return (f"Input normalization: bioimage.io's standard scale_range between the {low} and {high} percentiles "
                "of the image." + stain)
    side = normalization.get("tile_size")
    return ("Input normalization: bioimage.io's standard zero_mean_unit_variance over the image"
            + (f"; cellmixer normalizes each {side}-pixel tile by its own statistics, which is the same for inputs "
               f"of at most {side} pixels (or tiles of that size)." if side else "."))


def _test_image(model: SegmentationModel, sample, *, nuclear=None, nuclear_channel=None) -> np.ndarray:
    """The test input, (C, H, W): a crop of ``sample`` (a file; default: a generated co-culture) of at most
    TEST_SIDE pixels a side, and of its nuclear stain for a model that reads one."""
    if sample is None:
        image, instances, _ = synthetic_culture(["roundcell", "spindle"], shape=(TEST_SIDE, TEST_SIDE), seed=0)
        stain = synthetic_nuclear_stain(instances, seed=0)
    else:
        image = read_image(sample, channel=model.channel)
        found = read_nuclear(sample, nuclear=nuclear, nuclear_channel=nuclear_channel, shape=image.shape)
        stain = None if found is None else found[0]
        if model.nuclear_input and stain is None:
            raise CellmixerError(f"--sample {sample}: the model reads the nuclear stain beside the image; give the "
                                 "sample's stain (--nuclear-replace OLD NEW, --nuclear FOLDER or --nuclear-channel C).")
    if image.ndim != 2 or min(image.shape) < MIN_SIDE:
        raise CellmixerError(f"--sample {sample}: an image of {image.shape} pixels; give a 2-D image of at least "
                             f"{MIN_SIDE} x {MIN_SIDE} pixels.")
    # Models that normalize each tile on its own predict an input of at most one tile as bioimage.io does.
    side = min(TEST_SIDE, model.config["normalization"].get("tile_size") or TEST_SIDE)
    h, w = (min(n, side) for n in image.shape)
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    channels = [image, stain] if model.nuclear_input else [image]
    return np.ascontiguousarray(np.stack([c[top:top + h, left:left + w] for c in channels]), dtype=np.float32)


def _cover(image: np.ndarray, probabilities: np.ndarray, model: SegmentationModel, kind: str) -> np.ndarray:
    """Image | prediction side by side (2:1, as bioimage.io shows covers)."""
    left = np.repeat(to_uint8(image)[..., None], 3, axis=2)
    if kind == "centroids":
        right = np.repeat(to_uint8(probabilities[0], low=0, high=100)[..., None], 3, axis=2)
    else:
        first = model.config["architecture"]["instance_classes"] if kind == "typed" else 1
        classes = output_channels(model)[first:]
        if kind == "typed":  # each cell pixel (background below one half) coloured by its most likely type
            labels = np.where(probabilities[0] < 0.5, probabilities[first:].argmax(axis=0) + 1, 0)
        else:
            labels = probabilities.argmax(axis=0)
        colors = class_colors(len(classes))
        right = add_legend(overlay_labels(image, labels.astype(np.uint8), colors), classes, colors)[:left.shape[0],
                                                                                                  :left.shape[1]]
    return np.concatenate([left, right], axis=1)


def _documentation(model: SegmentationModel, channels: list[str], kind: str) -> str:
    what = ("Two channels: the grey-level image and the nuclear stain of the same field (Hoechst, DAPI), axes batch, "
            "channel (2), y, x" if model.nuclear_input else "One grey-level image, axes batch, channel (1), y, x")
    lines = [f"# cellmixer {method_of(model).model_title}", "",
             f"Exported by cellmixer {__version__} from a model trained by `{method_of(model).train_command}`.", "",
             "## Input", "", f"{what}; any size (the network pads to its pooling grid).", "",
             _normalization_text(model), ""]
    if model.input_scale != 1.0:
        lines += [f"The network runs at {model.input_scale:g} times the image size (the scale it was trained at): "
                  "the image is resized inside the exported network and the output comes back at the input size.", ""]
    lines += ["## Output", "", "Channels: " + ", ".join(channels) + ".", ""]
    if kind == "typed":
        lines += ["Two softmaxes: background / cell / cell boundary, and the cell type (probability of the type "
                  "given a cell). `cellmixer typed predict` turns them into typed cell instances.", ""]
    elif kind == "centroids":
        lines += ["The detector's likelihood map (about 1 at cell centres); `cellmixer centroids predict` recovers "
                  "each cell's shape from it by guided backpropagation and graph cuts.", ""]
    elif kind == "nuclei":
        lines += ["Softmax of background / nucleus / separation line; `cellmixer nuclei predict` turns it into "
                  "nucleus instances.", ""]
    else:
        lines += ["Softmax over background and the cell types; the label of a pixel is the channel with the highest "
                  "probability.", ""]
    lines += ["## Files", "", f"- `{ARCHITECTURE_FILE}`: the network in plain torch (no cellmixer needed)",
              f"- `{STATE_DICT_FILE}`, `{TORCHSCRIPT_FILE}`: the same weights as a state dict and as TorchScript",
              "- `test_input.npy`, `test_output.npy`: a test image and the exported model's output", ""]
    return "\n".join(lines)


def export_bioimageio(model, output, *, sample=None, nuclear=None, nuclear_channel=None, name: str | None = None,
                      authors=("cellmixer user",), license: str = "CC-BY-4.0", overwrite: bool = False) -> Path:
    """Write a bioimage.io model package (a zip in the current spec format) of a trained model.

    The package holds ``rdf.yaml``; the weights as a PyTorch state dict with a self-contained
    architecture file (torch only: no cellmixer needed to load it) and as TorchScript; a test input
    and the model's output on it; a cover image; documentation; the citations of the method's paper
    and of the package. CellMixer's background normalization, which bioimage.io has no standard
    preprocessing for, is built into the exported network (the rdf says so); percentile and
    per-image normalization are the standard ``scale_range`` and ``zero_mean_unit_variance``. A model
    that reads the nuclear stain takes the image and its stain as the two channels of its input, the
    stain's normalization by its nuclei built in. Works offline.

    Parameters
    ----------
    model : str, Path or SegmentationModel
        A model folder of any method (CellMixer, nuclei, typed cells, cell centres) with a U-Net.
    output : str or Path
        The ``.zip`` file to write.
    sample : str or Path, optional
        An image of the kind the model was trained on; its centre (at most 256 pixels a side) is the
        test input and the cover. Default: a generated co-culture.
    nuclear, nuclear_channel :
        Where the sample's nuclear stain is, for a model that reads one (see
        :func:`cellmixer.io.read_nuclear`); its package takes the image and the stain as two channels.
    name : str, optional
        The model's name in the rdf (default from the method and classes).
    authors : sequence of str
        Who trained the model.
    license : str
        SPDX identifier of the weights' licence.
    overwrite : bool
        Replace an existing ``output``.

    Returns
    -------
    Path
        ``output``.
    """
    v0_5, save_package, validation_context = _spec()
    try:
        license = v0_5.LicenseId(license)
    except ValueError:
        raise CellmixerError(f"--license {license}: not an SPDX licence identifier bioimage.io knows; give one such "
                             "as CC-BY-4.0 or MIT.") from None
    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise CellmixerError(f"--bioimageio {output}: give a file name ending in .zip.")
    if output.exists() and not overwrite:
        raise CellmixerError(f"{output} already exists; pass --overwrite to replace it.")
    source = model
    if not isinstance(model, SegmentationModel):
        model = SegmentationModel.load(model)
    architecture = model.config["architecture"]["name"]
    if architecture not in NETWORKS:
        raise CellmixerError(f"{source}: a {architecture} network; bioimage.io export supports U-Net models "
                             f"({', '.join(sorted(NETWORKS))}).")
    if model.config["normalization"].get("method") == "flatfield":
        # the exported network builds in the background normalization only; a flat field is not ported to torch
        raise CellmixerError(f"{source}: its input is normalized by a flat field, which bioimage.io export does not "
                             "build in; export a model trained with --normalization background.")
    kind = method_of(model).name
    channels = output_channels(model)
    network = exported_network(model)
    image = _test_image(model, sample, nuclear=nuclear, nuclear_channel=nuclear_channel)
    # bioimage.io's standard preprocessing (if any) normalizes each channel over y and x
    test_input = np.stack([standard_preprocessing(c, model.config["normalization"]) for c in image])[None]
    with torch.inference_mode():
        test_output = network(torch.from_numpy(test_input)).numpy()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cellmixer-export-", dir=output.parent) as folder:
        folder = Path(folder)
        write_text(folder / ARCHITECTURE_FILE, network_source())
        torch.save(network.state_dict(), folder / STATE_DICT_FILE)
        torch.jit.script(network).save(str(folder / TORCHSCRIPT_FILE))
        np.save(folder / "test_input.npy", image[None])
        np.save(folder / "test_output.npy", test_output)
        write_png(folder / "cover.png", _cover(image[0], test_output[0], model, kind))
        write_text(folder / "README.md", _documentation(model, channels, kind))
        try:
            descr = _description(v0_5, model, folder, channels, kind, name=name, authors=authors, license=license)
        except ValueError as exc:  # pydantic's validation of what the user gave (name, authors, licence)
            first = exc.errors()[0] if hasattr(exc, "errors") and exc.errors() else {}
            field = ".".join(str(part) for part in first.get("loc", ())) or "description"
            raise CellmixerError(f"--bioimageio {output}: bioimage.io refuses the {field} {first.get('input')!r}; "
                                 "check --name and --author.") from None
        with validation_context(perform_io_checks=False):
            with atomic_path(output, overwrite=overwrite) as tmp:
                save_package(descr, output_path=tmp)
    return output


def _description(v0_5, model, folder: Path, channels, kind: str, *, name, authors, license):
    method = method_of(model)
    normalization = model.config["normalization"]
    version = v0_5.Version(torch.__version__.split("+")[0])
    step = getattr(model.network, "size_multiple", 1)
    size = v0_5.ParameterizedSize(min=max(MIN_SIDE, step), step=step)
    channel_names = ["image", "nuclear_stain"] if model.nuclear_input else ["image"]
    inputs = [v0_5.InputTensorDescr(
        id=v0_5.TensorId("image"),
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channel_names]),
              v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size), v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size)],
        test_tensor=v0_5.FileDescr(source=folder / "test_input.npy"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=_preprocessing(v0_5, normalization),
    )]

    def same_as_input(axis):
        return v0_5.SizeReference(tensor_id=v0_5.TensorId("image"), axis_id=v0_5.AxisId(axis))

    outputs = [v0_5.OutputTensorDescr(
        id=v0_5.TensorId("likelihood" if kind == "centroids" else "probabilities"),
        axes=[v0_5.BatchAxis(),
              v0_5.ChannelAxis(channel_names=[v0_5.Identifier(_identifier(c)) for c in channels]),
              v0_5.SpaceOutputAxis(id=v0_5.AxisId("y"), size=same_as_input("y")),
              v0_5.SpaceOutputAxis(id=v0_5.AxisId("x"), size=same_as_input("x"))],
        test_tensor=v0_5.FileDescr(source=folder / "test_output.npy"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
    )]
    kwargs = {"architecture": dict(model.config["architecture"]),
              "background": exported_background(model), "input_scale": model.input_scale,
              "nuclear_input": model.nuclear_input}
    weights = v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=folder / STATE_DICT_FILE, pytorch_version=version,
            architecture=v0_5.ArchitectureFromFileDescr(source=folder / ARCHITECTURE_FILE,
                                                        callable=v0_5.Identifier("ExportedNetwork"), kwargs=kwargs)),
        torchscript=v0_5.TorchscriptWeightsDescr(source=folder / TORCHSCRIPT_FILE, pytorch_version=version,
                                                 parent="pytorch_state_dict"))
    classes = model.config.get("types", model.classes) if kind != "centroids" else []
    title = name or f"cellmixer {method.model_title}" + (f" ({' '.join(classes)})" if classes else "")
    return v0_5.ModelDescr(
        name="".join(c if c.isalnum() or c in "_+- ()" else " " for c in title)[:128],
        description=(f"{method.model_title.capitalize()} trained with cellmixer "
                     f"{model.config.get('cellmixer_version', '')} (`{method.train_command}`). "
                     f"{_normalization_text(model)}")[:1024],
        authors=[v0_5.Author(name=author) for author in authors],
        cite=[v0_5.CiteEntry(**METHOD_PAPERS[kind]),
              v0_5.CiteEntry(text=f"cellmixer {__version__}: cell-type segmentation trained without drawn masks "
                                  "(Python package implementing CellMixer and its companion methods)",
                             url=CELLMIXER_PAPER["url"])],
        license=license,
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        covers=[v0_5.FileDescr(source=folder / "cover.png")],
        tags=sorted({"cellmixer", "segmentation", "2d", "microscopy", "pytorch", kind}),
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        config={"cellmixer": {"model": {k: v for k, v in model.config.items() if k != "training"}}},
    )


def _identifier(text: str) -> str:
    """A channel name bioimage.io accepts: a Python identifier (ASCII letters, digits and underscores, not
    starting with a digit: ``3T3`` becomes ``_3T3``).

    >>> [_identifier(name) for name in ("3T3", "MCF10A", "T cell", "é")]
    ['_3T3', 'MCF10A', 'T_cell', 'channel']
    """
    name = "".join(c if c.isascii() and c.isalnum() else "_" for c in text).strip("_") or "channel"
    return f"_{name}" if name[0].isdigit() else name
