"""Query suggestion and training-data augmentation (see issue 7); nothing here yet."""
