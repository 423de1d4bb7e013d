package dev.distillery.runtime;

/** Where a tensor's storage lives. */
public enum Device {
    CPU, CUDA
}
