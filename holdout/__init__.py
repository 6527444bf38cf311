"""holdout: an external holdout from EXIF-verified web photos, and the test manipulations.

``holdout.manipulate`` applies the challenge's eight manipulations; ``holdout.scan``,
``holdout.rules``, ``holdout.filter`` and ``holdout.build`` turn a folder of photos
into a balanced, de-duplicated holdout list.  This module imports only numpy and
Pillow; OpenCV and pandas are imported by the functions that need them.
"""

from holdout.errors import HoldoutError, ImageError, ManifestError, RulesError
from holdout.manipulate import MANIPULATIONS, manipulate, random_manipulation

__all__ = [
    "MANIPULATIONS",
    "manipulate",
    "random_manipulation",
    "HoldoutError",
    "ImageError",
    "ManifestError",
    "RulesError",
]
