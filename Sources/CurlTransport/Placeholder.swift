// Placeholder so the package resolves; replaced as the target is written.
