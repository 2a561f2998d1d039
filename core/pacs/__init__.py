"""Studies from the PACS: query, retrieve and send over DIMSE (pynetdicom) or DICOMweb (dicomweb-client).

One node description (:class:`~core.pacs.node.PacsNode`) selects the protocol:
a host and port mean C-FIND / C-GET / C-STORE, a URL means QIDO-RS / WADO-RS /
STOW-RS. Retrieved instances are written to a folder and go through the normal
import (:func:`core.importer.import_paths`) with its integrity checks.
"""

from .node import PacsError, PacsNode, StudyMatch
from .service import query, retrieve, retrieve_and_import, send

__all__ = ["PacsError", "PacsNode", "StudyMatch", "query", "retrieve", "retrieve_and_import", "send"]
