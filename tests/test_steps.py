from trainer.data.buckets import BucketAssigner, BucketSettings, bucket_resolutions
from trainer.job.config import build_config
from trainer.job.steps import ImageSpec, plan_for_config, plan_steps, reg_sample_counts, warmup_steps

SQUARE = BucketSettings(resolution=(512, 512))


def test_single_bucket_batches_repeats_and_epochs():
    # 10 images × 3 repeats = 30 samples; bs 4 → ceil(30/4) = 8 batches; 5 epochs → 40 steps
    plan = plan_steps([ImageSpec(512, 512, 3)] * 10, [], SQUARE, batch_size=4, max_train_epochs=5)
    assert (plan.train_samples, plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (30, 8, 8, 40)


def test_gradient_accumulation_divides_batches_rounding_up():
    # 8 batches / accumulation 3 → ceil = 3 optimizer steps per epoch; 4 epochs → 12
    plan = plan_steps([ImageSpec(512, 512, 3)] * 10, [], SQUARE, 4, gradient_accumulation_steps=3,
                      max_train_epochs=4)
    assert (plan.steps_per_epoch, plan.total_steps) == (3, 12)


def test_processes_take_a_batch_each_per_step():
    # 8 batches over 2 processes × accumulation 2 → 4 batches a step → 2 steps per epoch; the batches stay 8
    plan = plan_steps([ImageSpec(512, 512, 3)] * 10, [], SQUARE, 4, gradient_accumulation_steps=2,
                      max_train_epochs=3, processes=2)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (8, 2, 6)
    uneven = plan_steps([ImageSpec(512, 512, 1)] * 5, [], SQUARE, 1, max_train_epochs=1, processes=2)
    assert uneven.steps_per_epoch == 3  # the last step has one batch: the other process adds nothing


def test_regularization_images_are_cycled_to_match_and_double_the_steps():
    # 20 train samples; 3 reg images cycled to 20 samples → 40 samples, bs 2 → 20 batches
    plan = plan_steps([ImageSpec(512, 512, 2)] * 10, [ImageSpec(512, 512, 1)] * 3, SQUARE, 2, max_train_epochs=1)
    assert (plan.reg_samples, plan.batches_per_epoch, plan.total_steps) == (20, 20, 20)
    assert reg_sample_counts([1, 1, 1], 20) == [7, 7, 6]
    assert reg_sample_counts([5, 5], 7) == [5, 5]  # the first pass registers whole repeat counts
    assert reg_sample_counts([], 20) == []


def test_batches_are_formed_inside_buckets():
    buckets = BucketSettings(resolution=(512, 512), enabled=True, min_reso=256, max_reso=1024, step=64)
    # 3 square + 3 wide images, 1 repeat, bs 2: ceil(3/2) + ceil(3/2) = 4 batches (not ceil(6/2) = 3)
    images = [ImageSpec(512, 512)] * 3 + [ImageSpec(1024, 512)] * 3
    plan = plan_steps(images, [], buckets, 2, max_train_epochs=1)
    assert len(plan.bucket_counts) == 2 and plan.batches_per_epoch == 4


def test_max_train_steps_when_no_epochs_given():
    plan = plan_steps([ImageSpec(512, 512, 1)] * 10, [], SQUARE, 3, max_train_steps=100)
    assert (plan.steps_per_epoch, plan.epochs, plan.total_steps) == (4, 25, 100)


def test_epochs_override_max_steps_through_the_config():
    cfg = build_config({"max_train_steps": 5, "max_train_epochs": 2, "train_batch_size": 1})
    assert plan_for_config(cfg, [ImageSpec(512, 512, 4)], []).total_steps == 8


def test_warmup_ratio_is_a_fraction_of_total_steps():
    assert warmup_steps(build_config({"lr_warmup_steps": 0.1}), 250) == 25
    assert warmup_steps(build_config({"lr_warmup_steps": 30}), 250) == 30


def test_bucket_resolutions_respect_area_step_and_limits():
    sizes = bucket_resolutions(BucketSettings((512, 512), True, 256, 1024, 64))
    assert (512, 512) in sizes and (256, 1024) in sizes and (1024, 256) in sizes and (640, 384) in sizes
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 and min(w, h) >= 256 for w, h in sizes)


def test_bucket_choice_follows_aspect_ratio():
    assigner = BucketAssigner(BucketSettings((512, 512), True, 256, 1024, 64))
    assert assigner.assign(1000, 1000) == (512, 512)
    width, height = assigner.assign(1600, 900)
    assert width > height and abs(width / height - 16 / 9) < 0.2


def test_no_upscale_gives_each_image_its_own_bucket_never_larger():
    assigner = BucketAssigner(BucketSettings((512, 512), True, 256, 1024, 64, no_upscale=True))
    assert assigner.assign(300, 200) == (256, 192)  # small images are cropped down to the step, not upscaled
    width, height = assigner.assign(2000, 1000)
    assert width * height <= 512 * 512 and width % 64 == 0 and width > height
