"""Neural-network models built on the odekit engine (chapter 3: the heavy-ball family)."""

from .block import ODEBlock
from .dynamics import FirstOrder, HeavyBall, SecondOrder, ghbnode, hbnode
from .initial import ImageMomentum, VectorMomentum, ZeroAugment
from .layers import ConvTimeField, MLPField, tpad
from .zoo import MODEL_KINDS, ContinuousDepthModel, count_parameters, image_model, pointcloud_model

__all__ = [
    "ODEBlock", "FirstOrder", "SecondOrder", "HeavyBall", "hbnode", "ghbnode", "ZeroAugment", "VectorMomentum",
    "ImageMomentum", "MLPField", "ConvTimeField", "tpad", "MODEL_KINDS", "ContinuousDepthModel", "image_model",
    "pointcloud_model", "count_parameters",
]
