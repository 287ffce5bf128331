"""Every user-facing string of the viewer, in one place, so clinicians can review the wording."""

from __future__ import annotations

APP_NAME = "condiff viewer"
ORG_NAME = "condiff"
WINDOW_TITLE = "condiff viewer"
WINDOW_TITLE_WITH_SCAN = "{name} - condiff viewer"

# Menus and actions
MENU_FILE = "&File"
MENU_VIEW = "&View"
MENU_ANALYSIS = "&Analysis"
MENU_HELP = "&Help"
MENU_RECENT = "Open &Recent"
ACT_OPEN = "&Open scan..."
ACT_OPEN_DICOM = "Open &DICOM folder..."
ACT_OPEN_BRAIN_MASK = "Open &brain mask..."
ACT_CLEAR_BRAIN_MASK = "Clear brain mas&k"
ACT_CHOOSE_MODEL = "Choose &model folder..."
ACT_EXPORT = "&Export results beside the scan"
ACT_EXPORT_TO = "Export results &to folder..."
ACT_SCREENSHOT = "Save &screenshot..."
ACT_QUIT = "&Quit"
ACT_CLEAR_RECENT = "Clear list"
ACT_ANALYSE_SLICE = "Analyse &slice"
ACT_ANALYSE_VOLUME = "Analyse &volume"
ACT_CANCEL = "&Cancel analysis"
ACT_RESET_VIEW = "&Reset zoom and pan"
ACT_SHORTCUTS = "&Keyboard and mouse..."
ACT_ABOUT = "&About"

# Open dialog
OPEN_TITLE = "Open scan"
OPEN_FILTER = "Scans (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"
OPEN_DICOM_TITLE = "Open DICOM series folder"
OPEN_BRAIN_MASK_TITLE = "Open brain mask (on the scan's grid)"
MODEL_DIR_TITLE = "Choose model folder"
EXPORT_DIR_TITLE = "Export results to folder"
SCREENSHOT_TITLE = "Save screenshot"
SCREENSHOT_FILTER = "PNG image (*.png)"

# Panels
PANEL_CONTRAST = "Contrast"
PANEL_OVERLAYS = "Overlays"
PANEL_ANALYSIS = "Analysis"
PANEL_MODEL = "Model"
LBL_WINDOW = "Window"
LBL_LEVEL = "Level"
BTN_AUTO = "Auto"
BTN_RESET = "Reset"
TIP_AUTO = "Robust contrast from the 1st-99th percentiles of the non-zero voxels"
TIP_WL_DRAG = "Right-drag on the image: left/right = window width, up/down = level"
LBL_BASE = "Image"
BASE_SCAN = "Scan"
BASE_RESTORED = "Pseudo-healthy (restored)"
BASE_DIFFERENCE = "Difference (scan - restored)"
CHK_HEAT = "Anomaly map"
CHK_MASK = "Mask contour"
CHK_FILL = "Fill mask"
CHK_SPREAD = "Member disagreement"
CHK_SIDE_BY_SIDE = "Restored side by side"
LBL_THRESHOLD = "Threshold"
LBL_OPACITY = "Opacity"
TIP_THRESHOLD = "Map values below the threshold are transparent. Units: {units}. Calibrated default: {default}"
LBL_PLANE = "Plane"
PLANE_NAMES = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}
CHK_RADIOLOGICAL = "Radiological (patient's left on screen right)"
LBL_DEVICE = "Device"
LBL_SAMPLER = "Sampler"
LBL_STEPS = "Steps"
LBL_SEED = "Seed"
LBL_BRAIN_MASK = "Brain mask"
BRAIN_MASK_NONE = "none (the scan is taken as skull-stripped)"
TIP_BRAIN_MASK = ("For scans with skull: a brain mask on the scan's own grid (File > Open brain mask). The analysis "
                  "then looks inside it only.")
STEPS_DEFAULT = "model default"
LBL_SLICE = "Slice"

# On-view text
CONVENTION_RADIOLOGICAL = "RADIOLOGICAL (L on right)"
CONVENTION_NEUROLOGICAL = "NEUROLOGICAL (L on left)"
SLICE_INFO = "{plane} {index}/{last}"
COLOURBAR_TITLE = "anomaly (1 - SSIM)"
COLOURBAR_THRESHOLD = "thr\n{value:.3g}"
NO_SCAN = "Open a scan (File > Open, or drop a file here)"
SLICE_PLOT_TITLE = "Slice anomaly score (click to go to a slice)"
SLICE_PLOT_X = "slice"
SLICE_PLOT_Y = "score"

# Status and readouts
READOUT = "voxel ({i}, {j}, {k})   RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm   value {value:.4g}"
READOUT_SCORE = "   anomaly {score:.3f}   spread {spread:.3f}"
READOUT_NO_RESULT = "   anomaly -"
STATUS_LOADED = "Loaded {name}: {shape} voxels, {zooms} mm, {axcodes}"
STATUS_MODEL_LOADING = "Loading model..."
STATUS_NO_MODEL = "No model: {reason}"
MODEL_SUMMARY = "{name} v{version}\n{modality} model, {members} members, device {device}"
MODEL_NONE = "No model loaded"
PROGRESS_FORMAT = "{done}/{total} slices"
PROGRESS_ETA = "{done}/{total} slices, {eta} left"
STATUS_ANALYSING = "Analysing {count} slice(s)..."
STATUS_DONE = "Analysis finished: {count} slice(s) in {seconds:.1f} s"
STATUS_CACHED = "Slice already analysed with these settings (cached)"
STATUS_CANCELLED = "Analysis cancelled"
STATUS_EXPORTED = "Exported {count} file(s) to {folder}"
STATUS_SCREENSHOT = "Screenshot saved to {path}"
STATUS_BRAIN_MASK = "Brain mask {name}: {voxels} voxels ({litres:.2f} l)"
STATUS_BRAIN_MASK_CLEARED = "Brain mask cleared: the scan is taken as skull-stripped"
STATUS_BUSY = "An analysis is already running"
PARTIAL_EXPORT = "Only {done} of {total} slices are analysed; the rest are exported as zero."

# Warnings and errors
WARN_MODALITY = "Warning: {message}"
ERR_TITLE = "condiff viewer"
ERR_OPEN = "Cannot open scan"
ERR_MODEL = "Model unavailable"
ERR_ANALYSIS = "Analysis failed"
ERR_EXPORT = "Export failed"
ERR_BRAIN_MASK = "Cannot use brain mask"
ERR_BRAIN_MASK_EMPTY = "{path}: the brain mask is empty (no voxel above 0)"
ERR_UNEXPECTED = "Unexpected error"
ERR_UNEXPECTED_LINE = "Unexpected error: {kind}: {message} (details in the log)"
ERR_NO_SCAN = "Open a scan first."
ERR_NO_RESULT = "Analyse the scan first: there is nothing to export."
ERR_NO_MODEL = "No model is loaded ({reason}). Choose a model folder in File > Choose model folder."
ERR_VERIFY = "{path}: reloaded mask does not match the scan's grid ({problem})"
ERR_OVERWRITE_SCAN = "Refusing to write over the scan itself: {path}"
ASK_OVERWRITE = "{count} output file(s) already exist in {folder}. Replace them?"
ERR_CLI_SCAN = "condiff-viewer: {message}"
ERR_CLI_MODEL = "condiff-viewer: model unavailable: {message}"
ERR_CLI_ANALYSIS = "condiff-viewer: analysis failed: {message}"

SHORTCUTS_TITLE = "Keyboard and mouse"
SHORTCUTS_HTML = """
<table cellspacing=4>
<tr><td><b>Up / Down</b>, mouse wheel</td><td>next / previous slice</td></tr>
<tr><td><b>Page Up / Page Down</b></td><td>10 slices up / down</td></tr>
<tr><td><b>Home / End</b></td><td>first / last slice</td></tr>
<tr><td><b>1 / 2 / 3</b></td><td>axial / coronal / sagittal</td></tr>
<tr><td><b>Ctrl + wheel</b>, <b>+ / -</b></td><td>zoom</td></tr>
<tr><td><b>Left-drag</b></td><td>pan</td></tr>
<tr><td><b>Right-drag</b></td><td>window (left/right) and level (up/down)</td></tr>
<tr><td><b>Click</b></td><td>place the cursor (kept when switching planes)</td></tr>
<tr><td><b>0</b></td><td>reset zoom and pan</td></tr>
<tr><td><b>W</b></td><td>auto contrast</td></tr>
<tr><td><b>R</b></td><td>swap scan and pseudo-healthy image</td></tr>
<tr><td><b>D</b></td><td>difference image on / off</td></tr>
<tr><td><b>H</b></td><td>anomaly map on / off</td></tr>
<tr><td><b>M</b></td><td>mask contour on / off</td></tr>
<tr><td><b>N</b></td><td>radiological / neurological</td></tr>
<tr><td><b>Ctrl+O</b></td><td>open scan</td></tr>
<tr><td><b>Ctrl+Return</b> / <b>Ctrl+Shift+Return</b></td><td>analyse slice / volume</td></tr>
<tr><td><b>Esc</b></td><td>cancel analysis</td></tr>
<tr><td><b>Ctrl+E</b> / <b>Ctrl+Shift+E</b></td><td>export beside the scan / to a folder</td></tr>
<tr><td><b>Ctrl+Shift+S</b></td><td>save screenshot</td></tr>
</table>
"""
ABOUT_TEXT = (
    "condiff viewer {version}\n\nBrain MRI anomaly detection with image-conditioned diffusion ensembles "
    "(after Baugh et al. 2024). For research use; not a medical device."
)
