"""Cells of CSV files marketers open in a spreadsheet."""

from __future__ import annotations

# A cell starting with one of these is read as a formula by spreadsheets (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell):
    """``cell`` as text a spreadsheet shows as it is: one that would start a formula gets a leading apostrophe."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell
