"""Input images of a command: files and folders (searched recursively), each with its output name and table key."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .._errors import CellmixerError
from ._dataset import is_inside, list_images, pattern_hint
from ._read import INPUT_SUFFIXES, ImagePlane, image_planes, read_image


@dataclass(frozen=True)
class InputImage:
    """One input of a command: the file, the name its outputs take, and its key in every table.

    Attributes
    ----------
    path : Path
        The image file.
    stem : str
        Output names start with it: ``<stem>_labels.tif``. Images found in a folder keep their
        sub-folder path (``sub/a.tif`` -> ``sub__a``) so that files of the same name in different
        folders do not collide; a plane of a stack adds its indices (``a_t003_z002``).
    key : str
        The path relative to the input folder it was found in (``sub/a.tif``; a file given
        itself: its name): the ``image`` column of every per-image table (``points.csv``, the
        summaries), unique where file names repeat.
    plane : ImagePlane, optional
        The plane of a stack this input is (:meth:`planes`); None: the whole file, read as one
        2-D image.
    """

    path: Path
    stem: str
    key: str
    plane: ImagePlane | None = None

    def read(self, channel=None, *, option: str = "--channel"):
        """The 2-D image (float32) of ``channel``: this plane, or the file (:func:`read_image`)."""
        return self.plane.read(channel, option=option) if self.plane is not None else read_image(
            self.path, channel=channel, option=option)

    def planes(self, *, project: str | None = None, pixel_size=None) -> list[InputImage]:
        """This input split into the 2-D planes a command processes (:func:`cellmixer.io.image_planes`)."""
        return [replace(self, stem=self.stem + p.suffix, plane=p)
                for p in image_planes(self.path, project=project, pixel_size=pixel_size)]

    @property
    def where(self) -> dict:
        """The table columns that say which plane this is: ``plane`` (``t003_z002``) for planes of stacks."""
        suffix = self.plane.suffix if self.plane is not None else ""
        return {"plane": suffix.lstrip("_")} if suffix else {}

    def __str__(self) -> str:
        return str(self.plane) if self.plane is not None else str(self.path)

    def __iter__(self):
        """Unpacks as ``(path, stem)``, the pairs :func:`collect_inputs` gave before it gave inputs."""
        return iter((self.path, self.stem))


def collect_inputs(inputs, *, pattern: str = "*", exclude=()) -> list[InputImage]:
    """The images of files and folders (searched recursively), each with a unique output stem.

    Parameters
    ----------
    inputs : path or list of paths
        Image files and folders.
    pattern : str
        Only files in folders whose name matches this glob pattern.
    exclude : sequence of paths
        Folders whose files are never inputs: the command's output folder, when it lies inside
        an input folder (results of an earlier run are not read back). Outputs of cellmixer and
        ground truth are skipped by name everywhere (:func:`cellmixer.io.skipped_reason`).

    Returns
    -------
    list of InputImage
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise CellmixerError("no inputs: give image files or folders of images.")
    found: list[InputImage] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir() and item.suffix.lower() != ".zarr":
            images = list_images(item, pattern=pattern, exclude=exclude)
            if not images:
                hint = pattern_hint(item, pattern, exclude=exclude)
                raise CellmixerError(f"{item}: no images ({', '.join(INPUT_SUFFIXES)}) found outside the output "
                                     f"folder{hint}; check the folder or --pattern.")
            found += [InputImage(p, "__".join(p.relative_to(item).with_suffix("").parts),
                                 p.relative_to(item).as_posix()) for p in images]
        elif item.exists():
            if item.suffix.lower() not in INPUT_SUFFIXES:
                raise CellmixerError(f"{item}: not an image file ({', '.join(INPUT_SUFFIXES)}).")
            found.append(InputImage(item, item.stem, item.name))
        else:
            raise CellmixerError(f"{item}: no such file or folder.")
    return check_unique_stems(found)


def check_unique_stems(found: list[InputImage]) -> list[InputImage]:
    """Refuse two inputs whose outputs would have the same name; returns ``found``."""
    by_stem: dict[str, Path] = {}
    for image in found:
        if image.stem in by_stem:
            raise CellmixerError(f"{by_stem[image.stem]} and {image.path} would both write '{image.stem}_labels.tif'; "
                                 "rename one or write them into separate output folders.")
        by_stem[image.stem] = image.path
    return found

