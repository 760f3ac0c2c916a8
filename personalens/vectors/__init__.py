"""Persona vectors: the PersonaVector value, its file formats (safetensors, Persona Vectors .pt, llama.cpp GGUF control vectors), algebra, and the shipped vectors."""

from personalens.vectors.algebra import (
    CosineMatrix,
    cosine_by_layer,
    cosine_matrix,
    gram_schmidt,
    normalize,
    project_out,
)
from personalens.vectors.control_vector import export_control_vector, import_control_vector
from personalens.vectors.resolve import load_vector
from personalens.vectors.shipped import list_shipped_vectors, shipped_vector
from personalens.vectors.vector import PersonaVector

__all__ = [
    "CosineMatrix",
    "PersonaVector",
    "cosine_by_layer",
    "cosine_matrix",
    "export_control_vector",
    "gram_schmidt",
    "import_control_vector",
    "list_shipped_vectors",
    "load_vector",
    "normalize",
    "project_out",
    "shipped_vector",
]
