"""The code MLflow stores with a logged minivess model ("models from code").

MLflow copies this file into the model and runs it on load, so the model is rebuilt by
importing :class:`MinivessPyfunc` rather than by unpickling a Python object.
"""

from mlflow.models import set_model

from minivess.tracking.pyfunc import MinivessPyfunc

set_model(MinivessPyfunc())
