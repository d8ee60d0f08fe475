"""The request bodies every Python peer validates (pydantic), shaped like dlserve's JSON requests."""
from typing import List, Optional

from pydantic import BaseModel


class ImageInput(BaseModel):
    pixels: Optional[List[List[float]]] = None


class ClassifyRequest(BaseModel):
    model: Optional[str] = None
    top_k: Optional[int] = None
    images: List[ImageInput]


class ForecastRequest(BaseModel):
    model: Optional[str] = None
    series: List[float]
    horizon: int


class AnomalyRequest(BaseModel):
    model: Optional[str] = None
    rows: List[List[float]]
    threshold: Optional[float] = None
    top_features: int = 3


class GenerateRequest(BaseModel):
    n: int = 1
    seed: int = 0
    label: Optional[str] = None
