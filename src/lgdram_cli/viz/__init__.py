"""Pictures: glimpse GIFs and sheets, dataset previews, learning curves."""
