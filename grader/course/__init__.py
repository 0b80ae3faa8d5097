"""The course workflow around grading: release, bundle, collect, roster, exports, review."""
