package dev.distillery.trainer.data;

import java.io.IOException;
import java.nio.file.Path;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.databind.json.JsonMapper;

/**
 * The JSON files users write (run configs, shard manifests): snake_case keys, an unknown key is
 * an error naming it with its path ({@code loss.temprature}) and the keys known there, and every
 * other problem names the file and where in it.
 */
public final class StrictJson {

    public static final ObjectMapper MAPPER = JsonMapper.builder()
            .propertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .build();

    private StrictJson() {
    }

    public static <T> T read(Path file, Class<T> type) throws IOException {
        try {
            return MAPPER.readValue(file.toFile(), type);
        } catch (UnrecognizedPropertyException e) {
            StringBuilder path = new StringBuilder();
            for (var ref : e.getPath()) {
                if (ref.getFieldName() != null) path.append(path.isEmpty() ? "" : ".").append(ref.getFieldName());
            }
            throw new IOException(file + ": unknown key '" + path + "' (known here: " + e.getKnownPropertyIds() + ")", e);
        } catch (java.io.FileNotFoundException | java.nio.file.NoSuchFileException e) {
            throw new IOException(file + ": no such file", e);
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new IOException(file + ": " + e.getOriginalMessage() + " (at line " + (e.getLocation() == null ? "?" : e.getLocation().getLineNr())
                    + ")", e);
        }
    }
}
