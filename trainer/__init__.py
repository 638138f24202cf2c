"""trainer: OpenPose models, masked-L2 training on lcdata stores, export, decoding, evaluation.

May import `lcdata`; `lcdata` never imports this package.
"""

__version__ = "0.1.0"
