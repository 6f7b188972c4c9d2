"""Pure formulas of the analyses (numpy / torch maths, no model running, no plotting)."""
