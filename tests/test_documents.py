"""Document boundaries (goldfish.documents): every way of giving them, on torch and NumPy alike."""

import numpy as np
import pytest
import torch
from reference import ref_documents

from goldfish.documents import document_starts, last_start_index, position_in_document


def _doc_ids(lengths):
    return [d for d, n in enumerate(lengths) for _ in range(n)]


@pytest.mark.parametrize("lengths", [[7], [3, 4, 1, 9], [1, 1, 1], [2, 15]])
def test_every_boundary_source_gives_the_same_starts(lengths):
    n = sum(lengths)
    ids = torch.arange(n)
    want = [i == s for i, s in enumerate(ref_documents(n, _doc_ids(lengths)))]
    position_ids = torch.tensor([p for m in lengths for p in range(m)])
    cu = np.cumsum([0, *lengths])
    for got in (document_starts(ids, doc_ids=torch.tensor(_doc_ids(lengths))), document_starts(ids, position_ids=position_ids),
                document_starts(ids, cu_seqlens=cu), document_starts(ids.numpy(), position_ids=position_ids.numpy())):
        assert got.tolist() == want


def test_position_and_last_start_follow_the_reference_on_both_backends():
    lengths = [5, 1, 12, 3]
    doc = _doc_ids(lengths)
    ref = ref_documents(len(doc), doc)
    starts = document_starts(np.zeros(len(doc), np.int64), doc_ids=np.asarray(doc))
    assert last_start_index(starts).tolist() == ref
    assert position_in_document(starts).tolist() == [i - s for i, s in enumerate(ref)]
    t = torch.tensor(starts).expand(2, len(doc))
    assert last_start_index(t).tolist() == [ref, ref] and isinstance(position_in_document(t), torch.Tensor)


def test_padding_starts_a_document_at_every_pad_and_after_it():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = document_starts(torch.zeros(2, 5, dtype=torch.long), attention_mask=mask)
    assert got.tolist() == [[True, True, True, False, False], [True, False, False, True, True]]


def test_cu_seqlens_checks():
    with pytest.raises(ValueError, match="one flattened row"):
        document_starts(torch.zeros(2, 4, dtype=torch.long), cu_seqlens=[0, 4])
    with pytest.raises(ValueError, match="rise from 0"):
        document_starts(torch.zeros(4, dtype=torch.long), cu_seqlens=[0, 5])
