package dev.distillery.trainer.cli;

/** The {@code --device} option: where kernels run. */
public enum DeviceChoice {
    auto, cpu, cuda
}
