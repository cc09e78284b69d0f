"""Example lgdram plugin: one dataset generator, one model variant, one loss term."""
