"""Cairn's own DAML-LF engine: DAR decoding, the package model and the interpreter."""
