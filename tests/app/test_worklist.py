"""The worklist footer: the same counts as the reading panel."""


def test_summary_counts_every_labelled_image_once_and_says_the_disagreements_within():
    from app.widgets.worklist import summary_text

    statuses = {"unlabelled": 234, "queued": 30, "labelled": 100, "flagged": 4, "disagreement": 36, "damaged": 2}
    assert summary_text(406, statuses) == ("406 images · 234 unlabelled · 30 queued · 140 labelled "
                                           "(36 disagree with the model, 4 flagged model wrong) · 2 damaged")
    assert summary_text(3, {"unlabelled": 3, "labelled": 0}) == "3 images · 3 unlabelled"
    assert summary_text(2, {"labelled": 2}) == "2 images · 2 labelled"
