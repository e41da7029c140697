"""Stand-in for ``torchvision`` inside the MONAI Label venv only (``.venv-monailabel``, see ``monailabel/install.sh``).

MONAI Label 0.8.5 imports ``torchvision.utils`` when its server starts (``monailabel.transform.post`` uses
``make_grid`` / ``save_image`` in a pathology debug transform), but the ``torchvision`` wheel on PyPI is linked against
CUDA libraries and fails to import next to a CPU build of torch (``operator torchvision::nms does not exist``), and
no CPU build matching torch 2.13 is on the package registries. The cellseg app never calls torchvision, so this
package only satisfies that import. ``install.sh`` puts it on the venv's path (a ``.pth`` file, which comes after
site-packages) only when no working torchvision is installed: a real torchvision, when present, is always used.
"""

__version__ = "0.0.0+cellseg.shim"
