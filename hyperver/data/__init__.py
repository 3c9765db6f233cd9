"""Dataset readers, the fixed split and safe image loading."""
from .folder import FlatFolderDataset, FolderDataset
from .imageio import decode_image, load_image
from .lfw import LFWDataset, Pair
from .records import ImageRecord
from .registry import DATASET_KINDS, open_dataset
from .split import PROJECT_SPLIT, FixedSplit, LFWSplit, parse_folds
from .verification_bin import VerificationBin, read_verification_bin

__all__ = ["DATASET_KINDS", "FixedSplit", "FlatFolderDataset", "FolderDataset", "ImageRecord", "LFWDataset",
           "LFWSplit", "PROJECT_SPLIT", "Pair", "VerificationBin", "decode_image", "load_image", "open_dataset",
           "parse_folds", "read_verification_bin"]
