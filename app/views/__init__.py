"""Widgets that draw the viewer state: the slice view and the slice-score plot."""
