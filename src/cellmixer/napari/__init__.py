"""The napari plugin (``pip install 'cellmixer[napari]'``): open cellmixer's results as layers, and run a
trained model on the open image from docked widgets. Its manifest is ``napari.yaml`` beside this file.

napari imports the modules the manifest names; nothing else in cellmixer imports this package, so napari
and Qt are needed only here. ``_layers`` turns results into napari layer data without napari.
"""
