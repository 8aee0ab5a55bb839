"""hopscope: SLO analytics for AI model serving — which hop is slow, and is it compute, bandwidth or memory?"""

__version__ = "0.1.0"
