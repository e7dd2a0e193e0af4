"""Compiler options shared by every target of the project (one place)."""

# C code of the library and tools: warnings are errors; only symbols marked
# ML_API are visible outside the shared library.
ML_COPTS = [
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wshadow",
    "-Wstrict-prototypes",
    "-Wmissing-prototypes",
    "-Wno-missing-field-initializers",
    "-fvisibility=hidden",
    "-D_GNU_SOURCE",
]

# C++ test code.
ML_TEST_COPTS = [
    "-std=c++17",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-missing-field-initializers",
    "-D_GNU_SOURCE",
]
