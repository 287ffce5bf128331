"""Analysis controls: model, brain mask, device, sampler, steps, seed, and the Analyse buttons (bound to the
analysis controller, which holds these choices)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import text
from app.controller import AnalysisController
from app.scheduler import AnalysisMode
from app.views.binding import set_quietly


class AnalysisPanel(QGroupBox):
    """What will analyse the scan and how; the choices are written to the controller as they change."""

    def __init__(self, controller: AnalysisController, parent: QWidget | None = None) -> None:
        super().__init__(text.PANEL_ANALYSIS, parent)
        self.controller = controller
        outer = QVBoxLayout(self)
        info = QFormLayout()
        self.model_label = QLabel(text.MODEL_NONE)
        self.model_label.setWordWrap(True)
        info.addRow(text.PANEL_MODEL, self.model_label)
        self.brain_mask_label = QLabel(text.BRAIN_MASK_NONE)
        self.brain_mask_label.setWordWrap(True)
        info.addRow(text.LBL_BRAIN_MASK, self.brain_mask_label)
        outer.addLayout(info)
        self.analyse_slice_button = QPushButton(text.ACT_ANALYSE_SLICE.replace("&", ""))
        self.analyse_slice_button.clicked.connect(lambda: controller.scheduler.request_analysis(AnalysisMode.SLICE))
        self.analyse_volume_button = QPushButton(text.ACT_ANALYSE_VOLUME.replace("&", ""))
        self.analyse_volume_button.clicked.connect(lambda: controller.scheduler.request_analysis(AnalysisMode.VOLUME))
        buttons = QHBoxLayout()
        buttons.addWidget(self.analyse_slice_button)
        buttons.addWidget(self.analyse_volume_button)
        outer.addLayout(buttons)
        # Sampler, steps, seed and device: folded away until asked for (the model's defaults suit most uses).
        self.settings_toggle = QToolButton()
        self.settings_toggle.setText(text.BTN_ANALYSIS_SETTINGS)
        self.settings_toggle.setCheckable(True)
        self.settings_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.settings_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.settings_toggle.setAutoRaise(True)
        outer.addWidget(self.settings_toggle)
        self.settings_box = QWidget()
        form = QFormLayout(self.settings_box)
        form.setContentsMargins(12, 0, 0, 0)
        self.device_combo = QComboBox()
        form.addRow(text.LBL_DEVICE, self.device_combo)
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(controller.models.samplers)
        form.addRow(text.LBL_SAMPLER, self.sampler_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1000)
        self.steps_spin.setSpecialValueText(text.STEPS_DEFAULT)
        form.addRow(text.LBL_STEPS, self.steps_spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        form.addRow(text.LBL_SEED, self.seed_spin)
        outer.addWidget(self.settings_box)
        self.settings_toggle.toggled.connect(self._show_settings)
        self._show_settings(False)
        self.device_combo.currentTextChanged.connect(lambda v: v and controller.models.set_settings(device=v))
        self.sampler_combo.currentTextChanged.connect(lambda v: controller.models.set_settings(sampler=v))
        self.steps_spin.valueChanged.connect(lambda v: controller.models.set_settings(steps=v))
        self.seed_spin.valueChanged.connect(lambda v: controller.models.set_settings(seed=v))

        controller.models.devices_changed.connect(self._on_devices_changed)
        controller.models.settings_changed.connect(self._on_settings_changed)
        controller.models.model_changed.connect(self._on_model_changed)
        controller.scan.brain_mask_changed.connect(self._on_brain_mask_changed)
        controller.scheduler.busy_changed.connect(self._on_busy_changed)
        self._on_devices_changed(controller.models.devices)
        self._on_settings_changed()
        self._on_model_changed()
        self._on_brain_mask_changed()
        self._on_busy_changed(controller.scheduler.busy)

    def _on_devices_changed(self, devices: list[str]) -> None:
        self.device_combo.blockSignals(True)
        self.device_combo.clear()
        self.device_combo.addItems(devices)
        self.device_combo.setCurrentText(self.controller.models.device)
        self.device_combo.blockSignals(False)

    def _on_settings_changed(self) -> None:
        c = self.controller
        self.device_combo.blockSignals(True)
        self.device_combo.setCurrentText(c.models.device)
        self.device_combo.blockSignals(False)
        self.sampler_combo.blockSignals(True)
        self.sampler_combo.setCurrentText(c.models.sampler)
        self.sampler_combo.blockSignals(False)
        set_quietly(self.steps_spin, c.models.steps)
        set_quietly(self.seed_spin, c.models.seed)

    def _on_model_changed(self) -> None:
        self.model_label.setText(self.controller.models.describe_model())
        model = self.controller.models.model
        self.model_label.setToolTip(str(model.info.path) if model is not None else "")

    def _on_brain_mask_changed(self) -> None:
        path = self.controller.scan.brain_mask_path
        self.brain_mask_label.setText(path.name if path is not None else text.BRAIN_MASK_NONE)
        self.brain_mask_label.setToolTip(str(path) if path is not None else text.TIP_BRAIN_MASK)

    def _show_settings(self, on: bool) -> None:
        self.settings_box.setVisible(on)
        self.settings_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def _on_busy_changed(self, busy: bool) -> None:
        for widget in (self.device_combo, self.sampler_combo, self.steps_spin, self.seed_spin):
            widget.setEnabled(not busy)

