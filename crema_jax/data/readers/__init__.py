"""Readers of raw ECG sources as their owners publish them, one module per source:
ptbxl, mimic_ecg, code15 (CODE-15% and SaMi-Trop), cinc (PhysioNet/CinC 2020-21),
dicom, wfdb_folder (any WFDB tree), plus windows (long recordings cut into windows),
wfdb_io (header and signal reading shared by the WFDB formats), base (the shared
constructor and CSV helpers) and registry (`data.source` -> reader)."""
