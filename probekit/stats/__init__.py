"""The formulas of each analysis as short pure functions (no model running, no plotting)."""
