package dev.distillery.runtime.io;

import java.io.IOException;
import java.nio.file.Path;

/** A safetensors file that breaks the format; the message names the file and, where known, the tensor. */
public final class SafetensorsFormatException extends IOException {

    public SafetensorsFormatException(Path file, String problem) {
        super(file + ": " + problem);
    }

    public SafetensorsFormatException(Path file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
    }
}
