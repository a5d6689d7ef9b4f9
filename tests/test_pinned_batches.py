"""PinnedBatches hands on the loader's batches in order from its background thread and raises the
loader's errors where the batch would have come. (Pinning itself needs a GPU: tests/test_cuda.py.)"""
import pytest

from mask_former.engine import PinnedBatches


def test_batches_come_in_order_and_end_with_the_loader():
    loader = [[{"file_name": f"{i}.png"}] for i in range(7)]  # no tensors: nothing to pin
    assert [batch[0]["file_name"] for batch in PinnedBatches(loader)] == [f"{i}.png" for i in range(7)]


def test_loader_errors_are_raised_in_the_consumer():
    def loader():
        yield [{"file_name": "good.png"}]
        raise ValueError("cannot read image file 'bad.png'")

    batches = iter(PinnedBatches(loader()))
    assert next(batches)[0]["file_name"] == "good.png"
    with pytest.raises(ValueError, match="bad.png"):
        next(batches)


def test_other_attributes_are_the_loaders():
    class Loader(list):
        dataset = "the dataset"

    assert PinnedBatches(Loader()).dataset == "the dataset"


def test_the_pinning_thread_copies_with_one_intra_op_thread_and_leaves_the_callers_alone():
    # Pin copies with a team of OpenMP threads per core, spin-waiting between batches, starved the
    # loader's workers (issue 18): the thread that pulls and pins batches must run with one.
    import torch

    seen = []

    def loader():
        for i in range(3):
            seen.append(torch.get_num_threads())
            yield [{"file_name": f"{i}.png"}]

    before = torch.get_num_threads()
    assert len(list(PinnedBatches(loader()))) == 3
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == before
