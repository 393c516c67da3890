"""The dev clock: move the service's clock forward and release the holds that fall due (local
runs and tests only; DEV_CLOCK_CONTROL)."""
