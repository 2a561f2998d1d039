"""Exports of a workspace: CSV / JSON tables; DICOM SR, Secondary Capture and VL Photographic Image;
PS3.15 de-identification."""

from core.export.deidentify import Deidentifier
from core.export.exporter import FORMATS, ExportReport, export_workspace

__all__ = ["Deidentifier", "ExportReport", "FORMATS", "export_workspace"]
