"""Reading microscopy images: the pixels, their axes, and what the file's metadata says about them.

:func:`open_image` reads a file's axes (time, channels, z, y, x), channel names, pixel size and
z spacing from its metadata (OME-XML, ImageJ, TIFF resolution tags; bioio for CZI, ND2, LIF and
OME-Zarr) without reading its pixels; :class:`MicroscopyImage` then reads the 2-D planes, or
projections over z, that the commands process. :func:`read_image` is the short form for one 2-D
image.
"""

from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .._errors import CellmixerError, is_out_of_memory, out_of_memory

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")  # read here, by tifffile and Pillow
# Read through bioio and its reader plugins, the optional extra `cellmixer[formats]`; .zarr is a folder.
FORMATS_SUFFIXES = (".czi", ".nd2", ".lif", ".zarr")
INPUT_SUFFIXES = IMAGE_SUFFIXES + FORMATS_SUFFIXES
FORMATS_EXTRA = "pip install 'cellmixer[formats]'"
PROJECTIONS = ("max", "mean")
AXES = "TCZYX"

# Micrometres per unit of the length units that OME-XML, ImageJ and bioio write.
_UNITS = {"m": 1e6, "cm": 1e4, "mm": 1e3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0,
          "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "pm": 1e-6}


def decode(path: Path, reader, what: str, formats: str):
    """``reader(path)``, with any decoder failure turned into a one-line error naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reader(path)
    except CellmixerError:
        raise
    except Exception as exc:  # any decoder failure is a bad file for the user
        if is_out_of_memory(exc):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CellmixerError(f"{path}: cannot read this {what} ({reason}); is the file complete and a "
                             f"{formats}?") from None


def parse_channel(text):
    """A channel as the command line gives it: a whole number is an index, anything else a name."""
    if text is None or isinstance(text, int):
        return text
    text = str(text).strip()
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else text


@dataclass(frozen=True, eq=False)
class MicroscopyImage:
    """An image file: its axes, channel names, pixel size, and a reader of its 2-D planes.

    Made by :func:`open_image`, which reads the metadata only; pixels are read plane by plane
    (:meth:`plane`, :meth:`projection`, :meth:`channels`).

    Attributes
    ----------
    path : Path
    sizes : dict
        ``{"T": frames, "C": channels, "Z": planes, "Y": height, "X": width}``.
    channel_names : tuple of str
        One per channel: the file's names (OME, CZI, ...), ``red``/``green``/``blue`` for RGB,
        else ``"0"``, ``"1"``, ...
    pixel_size : (float, float) or None
        Micrometres per pixel along y and x, from the metadata or given; None when unknown.
    z_spacing : float or None
        Micrometres between z-planes.
    rgb : bool
        The channels are the colour samples of an RGB(A) picture (averaged when no channel is chosen).
    scene, scenes : int
        Which scene (position, series) of a multi-scene file this is, and how many it has.
    """

    path: Path
    sizes: dict
    channel_names: tuple
    pixel_size: tuple | None = None
    z_spacing: float | None = None
    rgb: bool = False
    scene: int = 0
    scenes: int = 1
    axes: str = ""  # the file's own axes, as its reader named them (for messages)
    reader: Callable = field(default=None, repr=False)  # reader(t, c, z) -> raw 2-D plane

    @property
    def shape(self) -> tuple[int, int]:
        return self.sizes["Y"], self.sizes["X"]

    def describe(self) -> str:
        """``"2 channels (DAPI, GFP), 5 z-planes, 0.65 um/pixel"``: what a person checks."""
        parts = [f"{self.sizes['X']}x{self.sizes['Y']}"]
        c, z, t = self.sizes["C"], self.sizes["Z"], self.sizes["T"]
        if c > 1:
            parts.append(f"{c} channels ({', '.join(self.channel_names)})")
        if z > 1:
            parts.append(f"{z} z-planes")
        if t > 1:
            parts.append(f"{t} time points")
        if self.pixel_size is not None:
            parts.append(f"{_format_size(self.pixel_size)} um/pixel")
        return ", ".join(parts)

    def with_pixel_size(self, pixel_size) -> MicroscopyImage:
        """This image with the pixel size given by the user (a number: square pixels; or (y, x))."""
        if pixel_size is None:
            return self
        size = (float(pixel_size),) * 2 if np.ndim(pixel_size) == 0 else tuple(float(v) for v in pixel_size)
        if len(size) != 2 or not all(math.isfinite(v) and v > 0 for v in size):
            raise CellmixerError(f"--pixel-size {pixel_size}: give the micrometres per pixel, a positive number.")
        return replace(self, pixel_size=size)

    def channel_index(self, channel, *, option: str = "--channel") -> int | None:
        """The index of ``channel`` (an index, negative from the end, or a channel name), or None."""
        channel = parse_channel(channel)
        n = self.sizes["C"]
        if channel is None:
            return None
        if isinstance(channel, str):
            for names in (self.channel_names, [c.lower() for c in self.channel_names]):
                key = channel if names is self.channel_names else channel.lower()
                if key in names:
                    return list(names).index(key)
            raise CellmixerError(f"{self.path}: {option} {channel}: no channel of that name; its channels are "
                                 f"{', '.join(self.channel_names)} (or an index, 0 to {n - 1}).")
        if not -n <= channel < n:
            other = ""
            if n == 1 and (self.sizes["Z"] > 1 or self.sizes["T"] > 1):
                other = f" (its {self._stack_words()} are not channels)"
            which = "a single channel (use 0 or leave the option out)" if n == 1 else f"{n} channels (use 0 to {n - 1})"
            raise CellmixerError(f"{self.path}: {option} {channel} is out of range; this image has {which}{other}.")
        return channel % n

    def _stack_words(self) -> str:
        words = [f"{self.sizes['Z']} z-planes" if self.sizes["Z"] > 1 else "",
                 f"{self.sizes['T']} time points" if self.sizes["T"] > 1 else ""]
        return " and ".join(w for w in words if w)

    def _raw(self, t: int, c: int, z: int) -> np.ndarray:
        return decode(self.path, lambda _: np.asarray(self.reader(t, c, z)), "image", _format_names(self.path))

    def plane(self, channel=None, *, t: int = 0, z: int = 0, option: str = "--channel") -> np.ndarray:
        """One 2-D plane of one channel as float32 (RGB pictures without ``channel``: the mean colour).

        Raises a :class:`CellmixerError` naming the file for a missing or unknown channel, an
        unsupported pixel type and NaN or infinite values.
        """
        index = self.channel_index(channel, option=option)
        if index is None:
            if self.sizes["C"] == 1:
                index = 0
            elif self.rgb and self.sizes["C"] in (3, 4):
                rgb = [_as_float(self._raw(t, c, z), self.path) for c in range(3)]
                return _checked((rgb[0] + rgb[1] + rgb[2]) / np.float32(3), self.path)
            else:
                named = self.channel_names != tuple(str(i) for i in range(self.sizes["C"]))
                names = f", or a name: {', '.join(self.channel_names)}" if named else ""
                raise CellmixerError(f"{self.path}: image has {self.sizes['C']} channels; choose one with {option} "
                                     f"(0 to {self.sizes['C'] - 1}{names}).")
        return _checked(_as_float(self._raw(t, index, z), self.path), self.path)

    def projection(self, channel=None, *, t: int = 0, method: str = "max", option: str = "--channel") -> np.ndarray:
        """The projection of the z-planes of frame ``t`` (``max`` or ``mean``), as float32."""
        if method not in PROJECTIONS:
            raise CellmixerError(f"--project {method}: unknown; choose {' or '.join(PROJECTIONS)}.")
        out = None
        for z in range(self.sizes["Z"]):
            plane = self.plane(channel, t=t, z=z, option=option)
            out = plane if out is None else (np.maximum(out, plane) if method == "max" else out + plane)
        return out if method == "max" else out / np.float32(self.sizes["Z"])

    def channels(self, *, t: int = 0, z: int | None = 0, project: str | None = None) -> np.ndarray:
        """Every channel of one plane (or of the z projection with ``project``): (C, H, W) float32."""
        read = (lambda c: self.projection(c, t=t, method=project)) if project else (lambda c: self.plane(c, t=t, z=z))
        return np.stack([read(c) for c in range(self.sizes["C"])])


def _format_size(size) -> str:
    return f"{size[1]:g}" if size[0] == size[1] else f"{size[1]:g} x {size[0]:g}"


def _format_names(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".czi": "CZI file", ".nd2": "ND2 file", ".lif": "LIF file", ".zarr": "OME-Zarr folder"}.get(
        suffix, "TIFF, PNG or JPEG")


def _as_float(raw: np.ndarray, path: Path) -> np.ndarray:
    raw = np.squeeze(np.asarray(raw))
    if raw.ndim != 2:
        raise CellmixerError(f"{path}: a plane of shape {raw.shape} where 2-D was expected; the file's axes are "
                             "not understood.")
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    if not np.issubdtype(raw.dtype, np.number) or np.iscomplexobj(raw):
        raise CellmixerError(f"{path}: pixel type {raw.dtype} is not supported; save it as integer or float.")
    return raw.astype(np.float32, copy=False)


def _checked(image: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(image).all():
        raise CellmixerError(f"{path}: image contains NaN or infinite values; replace them before use.")
    return image


def _micrometres(value, unit, default_unit="um") -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    factor = _UNITS.get(str(unit if unit else default_unit).strip().lower().replace("\\u00b5", "µ"))
    if factor is None or not (math.isfinite(value) and value > 0):
        return None
    return value * factor


# --- TIFF: tifffile's series axes, OME-XML, ImageJ metadata, resolution tags ---------------------------


def _ome_metadata(xml: str) -> tuple[list[str], tuple | None, float | None]:
    """Channel names, (y, x) pixel size and z spacing (um) of the first image of an OME-XML document."""
    root = ElementTree.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return [], None, None
    names = [c.get("Name") or "" for c in pixels if c.tag.rsplit("}", 1)[-1] == "Channel"]
    x = _micrometres(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))
    y = _micrometres(pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit"))
    z = _micrometres(pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeZUnit"))
    size = (y or x, x or y) if (x or y) else None
    return names, size, z


def _resolution(page, unit) -> tuple | None:
    """(y, x) um per pixel from the resolution tags: pixels per ``unit``, or per the tag's own unit."""
    tags = page.tags
    if "XResolution" not in tags:
        return None
    if unit is None:  # plain TIFF: only the metric unit means a calibration (inch is a print's dpi)
        code = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
        unit = {3: "cm", 5: "um"}.get(int(code))
        if unit is None:
            return None

    def per_pixel(tag):
        num, den = tags[tag].value if tag in tags else tags["XResolution"].value
        return _micrometres(den / num, unit) if num else None

    x, y = per_pixel("XResolution"), per_pixel("YResolution")
    return (y, x) if x and y else None


def _open_tiff(path: Path) -> MicroscopyImage:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
        page_axes = series.keyframe.axes
        names, pixel_size, z_spacing = [], None, None
        if tif.is_ome:
            names, pixel_size, z_spacing = _ome_metadata(tif.ome_metadata)
        elif tif.is_imagej:
            meta = tif.imagej_metadata or {}
            unit = meta.get("unit")
            if unit:
                pixel_size = _resolution(tif.pages.first, unit)
                z_spacing = _micrometres(meta.get("spacing"), unit)
            labels = meta.get("Labels")
            if isinstance(labels, list) and meta.get("channels", 1) > 1 and len(labels) == meta.get("images"):
                names = labels[: meta["channels"]]  # slice labels of the first frame's channels
        else:
            pixel_size = _resolution(tif.pages.first, None)
        leading = axes[: len(axes) - len(page_axes)]
        pages = len(series.pages) if series.pages is not None else 0

    # The file's axes -> T, C, Z (Y, X and the colour samples S stay with the page).
    rgb = "S" in axes and shape[axes.index("S")] in (3, 4)
    mapping, unknown = {}, []
    for i, axis in enumerate(axes[:-2] if not axes.endswith("S") else axes[:-3]):
        name = {"T": "T", "Z": "Z", "C": "C", "S": "C"}.get(axis)
        if name is None or name in mapping:
            unknown.append((i, axis, shape[i]))
        else:
            mapping[name] = i
    if axes.endswith("S"):
        if "C" in mapping:
            unknown.append((len(axes) - 1, "S", shape[-1]))
        else:
            mapping["C"] = len(axes) - 1
    for i, axis, size in unknown:
        if size == 1:
            continue
        if len(unknown) == 1 and "C" not in mapping and size <= 8:
            mapping["C"] = i  # a plain stack of a few planes: channels, as most software writes them
            continue
        raise CellmixerError(
            f"{path}: image has shape {shape} and axes {axes} that its metadata does not name; only 2-D images "
            "with up to 8 channels are read without metadata: save z-stacks and time series as ImageJ or "
            "OME-TIFF (Fiji: File > Save As > Tiff) or split them into single images.")
    yx = tuple(i for i, a in enumerate(axes) if a in "YX")
    if len(yx) != 2 or any(a not in "YXS" for a in page_axes):
        raise CellmixerError(f"{path}: image has shape {shape} and axes {axes}; only planes of (y, x) pixels are "
                             "supported.")
    sizes = {name: (shape[mapping[name]] if name in mapping else 1) for name in "TCZ"}
    sizes.update(Y=shape[yx[0]], X=shape[yx[1]])
    by_page = pages == int(np.prod([shape[axes.index(a)] for a in leading], dtype=np.int64))

    def reader(t, c, z):
        index = [0] * len(axes)
        for name, value in (("T", t), ("C", c), ("Z", z)):
            if name in mapping:
                index[mapping[name]] = value
        where = tuple(slice(None) if a in "YX" else index[i] for i, a in enumerate(axes))
        with tifffile.TiffFile(path) as tif:
            if not by_page:
                return tif.series[0].asarray()[where]
            # Read only the page that holds the plane.
            key = int(np.ravel_multi_index(index[: len(leading)], shape[: len(leading)])) if leading else 0
            return tif.asarray(key=key, series=0)[where[len(leading):]]

    count = sizes["C"]
    if len(names) != count or not all(names):
        names = (["red", "green", "blue", "alpha"][:count] if rgb else [str(i) for i in range(count)])
    return MicroscopyImage(path, sizes, tuple(names), pixel_size, z_spacing, rgb, axes=axes, reader=reader)


def _open_picture(path: Path) -> MicroscopyImage:
    """PNG and JPEG: read at once (they are small), grey or RGB(A)."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L"):
            data = np.asarray(im, dtype=np.uint16)
        else:
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            data = np.asarray(im)
    if data.ndim == 2:
        data = data[..., None]
    count = data.shape[-1]
    names = ["red", "green", "blue", "alpha"][:count] if count in (3, 4) else [str(i) for i in range(count)]
    sizes = {"T": 1, "C": count, "Z": 1, "Y": data.shape[0], "X": data.shape[1]}
    return MicroscopyImage(path, sizes, tuple(names), rgb=count in (3, 4), axes="YXS",
                           reader=lambda t, c, z: data[..., c])


# --- CZI, ND2, LIF, OME-Zarr: bioio and its reader plugins (optional) -----------------------------------


def _open_bioio(path: Path, scene: int) -> MicroscopyImage:
    try:
        from bioio import BioImage  # optional: the [formats] extra
    except ImportError:
        raise CellmixerError(f"{path}: reading {path.suffix} files needs bioio and its reader plugins: "
                             f"{FORMATS_EXTRA}.") from None
    try:
        bio = BioImage(path)
    except Exception as exc:  # no plugin for the file (ImportError inside bioio included) or a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "plugin" in reason.lower() or "install" in reason.lower() or isinstance(exc, ImportError):
            raise CellmixerError(f"{path}: no bioio reader plugin for this file ({reason[:160]}); "
                                 f"{FORMATS_EXTRA}.") from None
        raise CellmixerError(f"{path}: cannot read this {_format_names(path)} ({reason[:160]}); is it complete?") \
            from None
    scenes = len(bio.scenes)
    if scene:
        bio.set_scene(scene)
    dims = bio.dims
    rgb = "S" in dims.order and getattr(dims, "S", 1) in (3, 4)
    order = "TCZYXS" if "S" in dims.order else AXES
    data = bio.get_image_dask_data(order)
    if rgb:  # colour samples are the channels
        data = data[:, 0].transpose(0, 4, 1, 2, 3)
    elif "S" in order:
        data = data[..., 0]
    sizes = dict(zip(AXES, (int(n) for n in data.shape)))
    names = [str(n) for n in (bio.channel_names or [])] if not rgb else ["red", "green", "blue", "alpha"][:sizes["C"]]
    if len(names) != sizes["C"] or not all(names):
        names = [str(i) for i in range(sizes["C"])]
    physical = bio.physical_pixel_sizes
    x, y = (v if v and math.isfinite(v) and v > 0 else None for v in (physical.X, physical.Y))
    pixel_size = (y or x, x or y) if (x or y) else None
    z = physical.Z if physical.Z and math.isfinite(physical.Z) and physical.Z > 0 else None
    return MicroscopyImage(path, sizes, tuple(names), pixel_size, z, rgb, scene=scene, scenes=scenes,
                           axes=dims.order, reader=lambda t, c, z_: data[t, c, z_].compute())


def open_image(path, *, scene: int = 0, pixel_size=None) -> MicroscopyImage:
    """An image file's axes and metadata, with a reader of its planes (no pixels are read yet).

    Parameters
    ----------
    path : str or Path
        TIFF (OME-TIFF and ImageJ hyperstacks included; any compression), PNG (8 or 16 bit),
        JPEG; with the ``[formats]`` extra, CZI, ND2, LIF and OME-Zarr (``.zarr`` folders).
    scene : int
        Which scene of a multi-scene file (CZI, LIF, ND2 positions).
    pixel_size : float or (float, float), optional
        Micrometres per pixel, replacing the file's (for files without a calibration).

    Returns
    -------
    MicroscopyImage

    Raises
    ------
    CellmixerError
        A missing or unreadable file, axes the metadata does not name, or a missing extra, on one
        line naming the file.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "stack.ome.tif")
    >>> tifffile.imwrite(path, np.zeros((2, 3, 8, 8), np.uint16), metadata={
    ...     "axes": "CZYX", "Channel": {"Name": ["DAPI", "GFP"]}, "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65})
    >>> image = open_image(path)
    >>> image.sizes, image.channel_names, image.pixel_size
    ({'T': 1, 'C': 2, 'Z': 3, 'Y': 8, 'X': 8}, ('DAPI', 'GFP'), (0.65, 0.65))
    >>> image.plane("GFP", z=2).shape
    (8, 8)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr" and path.is_dir():
        image = _open_bioio(path, scene)
    elif not path.is_file():
        raise CellmixerError(f"{path}: no such image file; check the path.")
    elif suffix in (".tif", ".tiff"):
        image = decode(path, _open_tiff, "image", "TIFF")
    elif suffix in FORMATS_SUFFIXES:
        image = _open_bioio(path, scene)
    else:
        image = decode(path, _open_picture, "image", "TIFF, PNG or JPEG")
    return image.with_pixel_size(pixel_size)


@dataclass(frozen=True)
class ImagePlane:
    """One 2-D field that a command processes: a plane (``t``, ``z``) of an image file, or with
    ``project`` the projection of frame ``t`` over z.

    ``suffix`` names it among the planes of its file (``_t003_z002``; empty for a 2-D image);
    :func:`read_image` reads it like a file.
    """

    image: MicroscopyImage
    t: int = 0
    z: int = 0
    project: str | None = None

    @property
    def path(self) -> Path:
        return self.image.path

    @property
    def suffix(self) -> str:
        """``_s01`` (scene), ``_t003`` (frame) and ``_z002`` (plane) where the file has more than one."""
        sizes, parts = self.image.sizes, []
        if self.image.scenes > 1:
            parts.append(f"_s{self.image.scene:0{max(2, len(str(self.image.scenes - 1)))}d}")
        for axis, value in (("T", self.t), ("Z", self.z)):
            if sizes[axis] > 1 and not (axis == "Z" and self.project):
                parts.append(f"_{axis.lower()}{value:0{max(3, len(str(sizes[axis] - 1)))}d}")
        return "".join(parts)

    def read(self, channel=None, *, option: str = "--channel") -> np.ndarray:
        """The plane (or projection) of ``channel``, (H, W) float32."""
        if self.project:
            return self.image.projection(channel, t=self.t, method=self.project, option=option)
        return self.image.plane(channel, t=self.t, z=self.z, option=option)

    def channels(self) -> np.ndarray:
        """Every channel of this plane, (C, H, W) float32."""
        return self.image.channels(t=self.t, z=self.z, project=self.project)

    def __str__(self) -> str:
        where = [f"{a}={v}" for a, v in (("t", self.t), ("z", self.z)) if self.image.sizes[a.upper()] > 1
                 and not (a == "z" and self.project)]
        where += [f"{self.project} projection"] if self.project and self.image.sizes["Z"] > 1 else []
        where = ([f"scene {self.image.scene}"] if self.image.scenes > 1 else []) + where
        return f"{self.path}" + (f" ({', '.join(where)})" if where else "")


def image_planes(image, *, project: str | None = None, pixel_size=None) -> list[ImagePlane]:
    """The 2-D fields of an image file that a command processes, one by one: every scene, every
    frame, and every z-plane, or the projection over z of each frame with ``project``.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "stack.tif")
    >>> tifffile.imwrite(path, np.zeros((2, 3, 8, 8), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    >>> [p.suffix for p in image_planes(path)][:4]
    ['_t000_z000', '_t000_z001', '_t000_z002', '_t001_z000']
    >>> [p.suffix for p in image_planes(path, project="max")]
    ['_t000', '_t001']
    """
    if project is not None and project not in PROJECTIONS:
        raise CellmixerError(f"--project {project}: unknown; choose {' or '.join(PROJECTIONS)}.")
    first = image if isinstance(image, MicroscopyImage) else open_image(image, pixel_size=pixel_size)
    scenes = [first] + [open_image(first.path, scene=s, pixel_size=pixel_size) for s in range(1, first.scenes)]
    planes = []
    for scene in scenes:
        zs = [0] if project else range(scene.sizes["Z"])
        planes += [ImagePlane(scene, t, z, project) for t in range(scene.sizes["T"]) for z in zs]
    return planes


def read_image(path, *, channel=None, project: str | None = None, option: str = "--channel") -> np.ndarray:
    """Read a 2-D microscopy image as float32, keeping its original intensity values.

    Parameters
    ----------
    path : str, Path, ImagePlane or InputImage
        A file that :func:`open_image` reads, holding one 2-D plane per channel (or, with
        ``project``, a z-stack); or one plane of a stack (:func:`image_planes`), or an input of
        a command (:class:`cellmixer.io.InputImage`).
    channel : int or str, optional
        Which channel of a multi-channel image: an index (negative from the end) or a channel
        name from the file's metadata (``"DAPI"``). ``None`` averages the colour channels of
        RGB(A) images (alpha dropped) and refuses other multi-channel images.
    project : {'max', 'mean'}, optional
        Project a z-stack to 2-D. Without it, a z-stack or time series is refused: use
        :func:`image_planes` to process its planes one by one.
    option : str
        How the messages name ``channel`` (``--channel``, ``--nuclear-channel``).

    Returns
    -------
    image : (H, W) float32 ndarray

    Raises
    ------
    CellmixerError
        If the file is missing, unreadable, holds several planes, the channel is out of range or
        has no such name, or it holds NaN or infinite values.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.tif")
    >>> tifffile.imwrite(path, np.arange(12, dtype=np.uint16).reshape(3, 4), compression="lzw")
    >>> read_image(path).dtype, read_image(path).shape
    (dtype('float32'), (3, 4))
    """
    with out_of_memory(str(getattr(path, "path", path)), "the image is too large for this machine; split it into "
                       "smaller fields"):
        return _read_image(path, channel, project, option)


def _read_image(path, channel, project, option) -> np.ndarray:
    if not isinstance(path, (str, Path)) and hasattr(path, "read"):  # an ImagePlane, or an input of a command
        return path.read(channel, option=option)
    image = open_image(path)
    stack = image.sizes["T"] > 1 or (image.sizes["Z"] > 1 and not project) or image.scenes > 1
    if stack:
        what = ", ".join(w for w in (image._stack_words(), f"{image.scenes} scenes" if image.scenes > 1 else "") if w)
        hint = "project it (--project max, where the command offers it) or save" if image.sizes["Z"] > 1 else "save"
        raise CellmixerError(f"{image.path}: holds {what} (axes {image.axes}) but this step takes one 2-D image; "
                             f"{hint} its planes as single images.")
    return ImagePlane(image, project=project).read(channel, option=option)


def check_not_constant(image: np.ndarray, name) -> None:
    """Raise a :class:`CellmixerError` naming ``name`` if ``image`` has a single value."""
    if image.size == 0 or float(image.max()) == float(image.min()):
        raise CellmixerError(f"{name}: image is constant (every pixel has the same value); remove it.")
