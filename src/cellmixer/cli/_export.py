"""``cellmixer export MODEL --bioimageio OUT.zip``: a trained model for other software."""

from __future__ import annotations

from ..export import export_bioimageio
from ._options import add_nuclear_options, nuclear_kwargs


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="write a model as a bioimage.io model package (deepImageJ, ilastik, "
                                      "bioimage.io)",
                       description="A bioimage.io model package (rdf.yaml, weights as a PyTorch state dict with a "
                                   "self-contained architecture file and as TorchScript, test input and output, cover, "
                                   "citations); CellMixer's background normalization is built into the network. "
                                   "Needs the extra: pip install 'cellmixer[bioimageio]'. Works offline.")
    p.add_argument("model", help="model folder of any method (a U-Net)")
    p.add_argument("--bioimageio", required=True, metavar="OUT.zip", help="the package to write")
    p.add_argument("--sample", default=None, metavar="IMAGE",
                   help="an image like the training images: its centre (up to 256 pixels a side) is the test input "
                        "and the cover (default: a generated co-culture)")
    add_nuclear_options(p.add_argument_group("the sample's nuclear stain (for models trained with one)"))
    p.add_argument("--name", default=None, help="the model's name in the package (default: method and classes)")
    p.add_argument("--author", dest="authors", action="append", default=None, metavar="NAME",
                   help="who trained the model (repeat for several)")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the weights (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.zip")
    p.add_argument("--quiet", "-q", action="store_true", help="no messages")


def run(args, progress: bool) -> None:
    path = export_bioimageio(args.model, args.bioimageio, sample=args.sample, **nuclear_kwargs(args), name=args.name,
                             authors=args.authors or ("cellmixer user",), license=args.license,
                             overwrite=args.overwrite)
    if progress:
        print(f"bioimage.io model package -> {path}")
