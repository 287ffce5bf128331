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
ACT_OPEN_WORKLIST = "Open &folder: a study, scans, a BIDS dataset or cohort results..."
ACT_OPEN_STUDY = "Add study &sequences or reference..."
ACT_SCAN_NEXT = "Ne&xt scan in the worklist"
ACT_SCAN_PREVIOUS = "Pre&vious scan in the worklist"
ACT_CLEAR_BRAIN_MASK = "Clear brain mas&k"
ACT_CHOOSE_MODEL = "Choose &model folder..."
ACT_EXPORT = "&Export results beside the scan"
ACT_EXPORT_TO = "Export results &to folder..."
ACT_SCREENSHOT = "Save &screenshot..."
ACT_SAVE_REPORT = "Save one-page &report (PDF, beside the scan)"
ACT_EXPORT_DICOM_SEG = "Export findings as DICOM SE&G (beside the series)"
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
OPEN_WORKLIST_TITLE = ("Open a folder: one subject's sequences (a study), scans, a BIDS dataset, or the output "
                       "folder of a cohort run")
OPEN_BRAIN_MASK_TITLE = "Open brain mask (on the scan's grid)"
OPEN_STUDY_TITLE = "Other sequences of this subject (FLAIR, T2, T1ce...) and a reference segmentation (*_seg, *_lesion)"
MODEL_DIR_TITLE = "Choose model folder"
EXPORT_DIR_TITLE = "Export results to folder"
SCREENSHOT_TITLE = "Save screenshot"
SCREENSHOT_FILTER = "PNG image (*.png)"

# Panels
PANEL_CONTRAST = "Contrast"
PANEL_OVERLAYS = "Overlays"
PANEL_ANALYSIS = "Analysis"
PANEL_CONTROLS = "Controls"
PANEL_MODEL = "Model"
PANEL_FINDINGS = "Findings"
PANEL_WORKLIST = "Worklist"
WORKLIST_COLUMNS = ("Scan", "Status", "Flagged (mL)", "Findings")
WORKLIST_EMPTY = "No worklist: File > Open folder or cohort results."
WORKLIST_SUMMARY = "{count} scans in {folder}, {analysed} analysed; most flagged first"
TIP_WORKLIST = ("The scans of a folder, or of a cohort run's output folder with their results (sorted by flagged "
                "volume). Click a row, or use [ and ], to open a scan; a cohort's results open without running "
                "the model.")
ERR_WORKLIST = "Cannot open worklist"
ERR_WORKLIST_RESULT = "Cannot open the cohort's result"
STATUS_WORKLIST = "Worklist: {count} scans from {folder}"
STATUS_WORKLIST_RESULT = "{name}: the cohort's result, threshold {threshold:.4g} (not recomputed)"
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
OVERLAY_LABELS = {"heat": CHK_HEAT, "mask": CHK_MASK, "spread": CHK_SPREAD}
BASE_LAYER_LABELS = {"scan": BASE_SCAN, "restored": BASE_RESTORED, "difference": BASE_DIFFERENCE}
LBL_THRESHOLD = "Threshold"
LBL_OPACITY = "Opacity"
TIP_THRESHOLD = "Map values below the threshold are transparent. Units: {units}. Calibrated default: {default}"
THRESHOLD_UNITS_UNCALIBRATED = "1 - SSIM"
THRESHOLD_DEFAULT_UNCALIBRATED = "none (uncalibrated model)"
LBL_PLANE = "Plane"
TIP_PLANE = "{plane} ({key})"
PLANE_NAMES = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}
CHK_RADIOLOGICAL = "Radiological (patient's left on screen right)"
LBL_DEVICE = "Device"
BTN_ANALYSIS_SETTINGS = "Sampler, steps, seed, device"
LBL_SAMPLER = "Sampler"
LBL_STEPS = "Steps"
LBL_SEED = "Seed"
LBL_BRAIN_MASK = "Brain mask"
BRAIN_MASK_NONE = "none (the scan is taken as skull-stripped)"
TIP_BRAIN_MASK = ("For scans with skull: a brain mask on the scan's own grid (File > Open brain mask). The analysis "
                  "then looks inside it only.")
STEPS_DEFAULT = "model default"
LBL_SLICE = "Slice"

# Findings table
FINDINGS_COLUMNS = ("#", "Volume (mL)", "Centre R, A, S (mm)", "Centre voxel", "Axial slices", "Max score",
                    "Mean score", "Members agree")
FINDINGS_COLUMN_TIPS = (
    "Rank: the largest anomaly load (volume times mean score) first",
    "Volume of the connected region above the threshold, on the scan's own grid",
    "Centre of the region in scanner coordinates (RAS+, mm)",
    "Centre of the region in the scan's voxel indices (i, j, k)",
    "First and last axial slice the region reaches",
    "Highest anomaly score in the region (1 - SSIM)",
    "Mean anomaly score over the region (1 - SSIM)",
    "Estimated share of ensemble members whose map is above the threshold here (from the members' spread)",
)
FINDINGS_NONE = "No result yet: analyse the scan to list its findings."
FINDINGS_SUMMARY = "{count} finding(s) above {threshold:.3g}; {left_out} smaller region(s) not listed"
LBL_FINDINGS_MIN = "Smallest"
TIP_FINDINGS_MIN = "Regions smaller than this are not listed"
TIP_FINDINGS = "Connected regions of the mask (3-D). Click a row to go to the region's highest score."
TIP_FINDINGS_RULES = "Sorted by {rank}.\nMembers agree: {agreement}."

# On-view text
CONVENTION_RADIOLOGICAL = "RADIOLOGICAL (L on right)"
CONVENTION_NEUROLOGICAL = "NEUROLOGICAL (L on left)"
SLICE_INFO = "{plane} {index}/{last}"
ERR_STUDY = "Cannot add to the study"
ERR_STUDY_NO_ANALYSED = "{folder}: no {sequence} scan among the sequences (the model analyses {sequence})"
STATUS_RESAMPLED = "{name}: on another grid; resampled to the analysed scan's for display."
STATUS_REFERENCE = ("Against the reference at {threshold:.3g}: slice Dice {slice_dice}, sensitivity {slice_sens}, "
                    "precision {slice_prec} | volume Dice {dice}, sensitivity {sens}, precision {prec}")
SEQUENCE_INFO = "{name}{analysed}{note} · {slice}"
SEQUENCE_ANALYSED = "analysed scan"
SEQUENCE_ANALYSED_MARK = " (analysed)"
SEQUENCE_RESAMPLED = " (resampled for display)"
PANE_TITLE = "{name}{note}"
REPORT_SEQUENCE = "{name} ({file}), as the viewer showed it"
REPORT_REFERENCE_LABEL = "Reference"
REPORT_REFERENCE = ("{file} (outlined in green): the mask at {threshold:.3g} against it, Dice {dice}, "
                    "sensitivity {sensitivity}, precision {precision} (volume)")
SCORE_NONE = "–"  # a share with nothing to divide by


def share(value: float | None) -> str:
    """A share as the status and the report write it: whole per cent, or SCORE_NONE when undefined."""
    return SCORE_NONE if value is None else f"{100 * value:.0f} %"



COLOURBAR_TITLE = "anomaly (1 - SSIM)"
COLOURBAR_THRESHOLD = "thr\n{value:.3g}"
NO_SCAN = "Open a scan (File > Open, or drop a file here)"
SLICE_PLOT_TITLE = "Slice anomaly score (click to go to a slice)"
ACT_SCORE_STRIP = "Slice-score &strip"
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
PROGRESS_ONE_SLICE = "Analysing axial slice {index}/{last}"
PROGRESS_VOLUME = "Analysing the whole scan: {done} of its {total} slices with brain have a map"
PROGRESS_PLANNING = "Analysing the whole scan: finding the slices with brain"
PROGRESS_SLICES = "Analysing {total} of the scan's {n} slices: {done} done"
PROGRESS_PERCENT = "%p %"  # Qt fills in the percentage
PROGRESS_LEFT = ", about {eta} left"
PROGRESS_STARTING = ", estimating the time..."
BTN_CANCEL_ANALYSIS = "Cancel"
TIP_CANCEL_ANALYSIS = "Stop the analysis at the engine's next step (Esc)"
STATUS_ANALYSING = "Analysing {count} slice(s)..."
STATUS_DONE = "Analysis finished: {count} slice(s) in {seconds:.1f} s"
STATUS_CACHED = "Slice already analysed with these settings (cached)"
STATUS_CACHED_VOLUME = "Scan already analysed with these settings (cached)"
STATUS_PLANNING = "Analysing the whole scan, the slice on screen first..."
STATUS_VOLUME_DONE = ("Analysis finished: {count} slices carry a map ({analysed} analysed, the ones between them "
                      "filled in) in {seconds:.1f} s")
STATUS_RUN_STOPPED = "Whole-scan analysis stopped: the scan, brain mask or settings changed"
STATUS_CANCELLED = "Analysis cancelled"
STATUS_EXPORTED = "Exported {count} file(s) to {folder}"
STATUS_SCREENSHOT = "Screenshot saved to {path}"
STATUS_REPORT = "Report written: {path}"
STATUS_DICOM_SEG = "DICOM SEG with {count} finding(s) written and checked: {path}"
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
ERR_REPORT = "Report failed"
ERR_BRAIN_MASK = "Cannot use brain mask"
ERR_BRAIN_MASK_EMPTY = "{path}: the brain mask is empty (no voxel above 0)"
ERR_UNEXPECTED = "Unexpected error"
ERR_UNEXPECTED_LINE = "Unexpected error: {kind}: {message} (details in the log)"
ERR_NO_SCAN = "Open a scan first."
ERR_NO_RESULT = "Analyse the scan first: there is nothing to export."
ERR_NO_MODEL = "No model is loaded ({reason}). Choose a model folder in File > Choose model folder."
ERR_VERIFY = "{path}: reloaded mask does not match the scan's grid ({problem})"
VERIFY_UNREADABLE = "cannot reload: {error}"
VERIFY_SHAPE = "shape {shape} != scan {expected}"
VERIFY_AFFINE = "affine differs from the scan's"
VERIFY_DTYPE = "dtype {dtype}, expected uint8"
ERR_PNG = "{path}: cannot write the PNG file"
ERR_NOT_DICOM = ("{name}: a DICOM SEG needs a scan opened from a DICOM series folder (File > Open DICOM folder); "
                 "this one is a {kind} file")
ERR_NOT_3D = "{path}: expected a 3-D volume, got shape {shape}"
ERR_READ = "{path}: {kind}: {message}"
ERR_WRITE = "{path}: {message}"
ERR_MODEL_FOLDER_MISSING = "{path}: model folder not found"
ERR_DEVICE_UNAVAILABLE = "device {device!r} is not available here (have {devices})"
REASON_NONE_CHOSEN = "none chosen"
REASON_NO_RESULT = "no result"
ERR_OVERWRITE_SCAN = "Refusing to write over the scan itself: {path}"
ASK_OVERWRITE = "{count} output file(s) already exist in {folder}. Replace them?"
ERR_CLI_SCAN = "condiff-viewer: {message}"
ERR_CLI_MODEL = "condiff-viewer: model unavailable: {message}"
ERR_CLI_ANALYSIS = "condiff-viewer: analysis failed: {message}"
ERR_CLI_NEEDS_SCAN = "--screenshot needs a scan"
# Before the first window (one line each, printed instead of Qt's abort)
ERR_PLUGIN_LIBRARIES = ("condiff-viewer: cannot open a window: Qt's {platform} platform plugin needs {libraries}, "
                        "which are not installed. On Debian/Ubuntu: sudo apt-get install {packages}")
ERR_NO_PLUGIN = ("condiff-viewer: cannot open a window: Qt's {platform} platform plugin is not in {folder} "
                 "(reinstall PySide6, or set QT_QPA_PLATFORM to a platform that is installed)")
ERR_NO_DISPLAY = ("condiff-viewer: cannot open a window: no display (DISPLAY is not set). Run it in a desktop "
                  "session or with ssh -X, or render without a window: --screenshot PNG")
ERR_NO_X_SERVER = ("condiff-viewer: cannot open a window: no X server answers on DISPLAY={display}. Check DISPLAY, "
                   "or render without a window: --screenshot PNG")

# Command line help
CLI_DESCRIPTION = "View brain MRI and its anomaly maps."
CLI_SCAN = ("scan to open: .nii/.nii.gz, .nrrd, .mha, or a DICOM folder; a folder of scans or a cohort run's output "
            "folder opens as the worklist")
CLI_MODEL = "model folder (default: the bundled model)"
CLI_BRAIN_MASK = "brain mask on the scan's grid, for scans with skull"
CLI_ALSO = ("other sequences of the same subject (FLAIR, T2, T1ce, ...), shown on the scan's grid under the map "
            "(S / A switch)")
CLI_REFERENCE = "a reference segmentation (e.g. *_seg.nii.gz): its outline, and Dice of the mask against it"
CLI_SEQUENCE = "with --screenshot: the sequence to draw under the map (e.g. FLAIR)"
CLI_LAYOUT = "single: one view, S / A switch the sequence; grid: every sequence in linked views (G switches)"
ERR_CLI_SEQUENCE = "no sequence {name!r} in the study ({names})"
CLI_ANALYZE = "analyse the shown slice (default) or the whole volume after opening"
CLI_SCREENSHOT = "render the view to PNG and exit (headless)"
CLI_REPORT = ("write the one-page PDF report the viewer saves (map, findings, study underlay and reference) into "
              "DIR and exit (headless; with --analyze)")
ERR_CLI_REPORT_NEEDS_ANALYSIS = "--report needs an analysis: add --analyze [slice|volume]"
CLI_DEVICE = "device for the analysis"
CLI_SLICE = "axial slice to show (native index along the scan's inferior-superior axis; default: the middle one)"
CLI_THRESHOLD = "anomaly threshold to show (default: the model's calibrated one)"
CLI_VERBOSE = "log debug messages"

SHORTCUTS_TITLE = "Keyboard and mouse"
# One help line per key binding (the keys themselves come from app.keymap)
KEY_SLICE_NEXT = "next slice (superior, anterior or right)"
KEY_SLICE_PREVIOUS = "previous slice"
KEY_SLICE_UP_10 = "10 slices up"
KEY_SLICE_DOWN_10 = "10 slices down"
KEY_SLICE_FIRST = "first slice"
KEY_SLICE_LAST = "last slice"
KEY_PLANE = "{plane} plane"
KEY_ZOOM_IN = "zoom in"
KEY_ZOOM_OUT = "zoom out"
KEY_ZOOM_RESET = "reset zoom and pan"
KEY_AUTO_CONTRAST = "auto contrast"
KEY_TOGGLE_RESTORED = "swap scan and pseudo-healthy image"
KEY_TOGGLE_DIFFERENCE = "difference image on / off"
KEY_TOGGLE_HEAT = "anomaly map on / off"
KEY_TOGGLE_MASK = "mask contour on / off"
KEY_TOGGLE_CONVENTION = "radiological / neurological"
KEY_OPEN = "open scan"
KEY_SEQUENCE_NEXT = "next sequence of the study under the map (T1, FLAIR, T2, ...)"
KEY_SEQUENCE_PREVIOUS = "previous sequence of the study"
KEY_TOGGLE_STUDY_GRID = "every sequence of the study in linked views (a 2 x 2 grid for four)"
KEY_SCAN_NEXT = "next scan in the worklist"
KEY_SCAN_PREVIOUS = "previous scan in the worklist"
KEY_ANALYSE_SLICE = "analyse the shown slice"
KEY_ANALYSE_VOLUME = "analyse the whole volume"
KEY_CANCEL = "cancel the analysis"
KEY_EXPORT = "export beside the scan"
KEY_EXPORT_TO = "export to a folder"
KEY_SCREENSHOT = "save screenshot"
KEY_SHORTCUTS = "this help"
KEY_QUIT = "quit"
MOUSE_HELP = (
    ("Mouse wheel", "next / previous slice"),
    ("Ctrl + wheel", "zoom"),
    ("Left-drag", "pan"),
    ("Right-drag", "window (left/right) and level (up/down)"),
    ("Click", "place the cursor (kept when switching planes)"),
)

ABOUT_TEXT = (
    "condiff viewer {version}\n\nBrain MRI anomaly detection with image-conditioned diffusion ensembles "
    "(after Baugh et al. 2024). For research use; not a medical device."
)
