package dev.distillery.trainer.data;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Collection;
import java.util.List;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import com.fasterxml.jackson.databind.cfg.CoercionAction;
import com.fasterxml.jackson.databind.cfg.CoercionInputShape;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
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
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)             // nothing after the JSON
            .disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT)               // steps: 2.7 is an error, not 2
            .withCoercionConfigDefaults(c -> c.setCoercion(CoercionInputShape.String, CoercionAction.Fail)   // "0.003" is not a number
                    .setCoercion(CoercionInputShape.Boolean, CoercionAction.Fail))
            .build();

    private StrictJson() {
    }

    public static <T> T read(Path file, Class<T> type) throws IOException {
        if (Files.isDirectory(file)) throw new IOException(file + ": a folder, not a JSON file");
        try {
            return MAPPER.readValue(file.toFile(), type);
        } catch (UnrecognizedPropertyException e) {
            throw new IOException(file + ": " + unknownKey(path(e), e.getPropertyName(), e.getKnownPropertyIds()), e);
        } catch (FileNotFoundException | NoSuchFileException e) {
            throw new IOException(file + ": no such file", e);
        } catch (MismatchedInputException e) {
            String key = path(e);
            throw new IOException(file + ": " + (key.isEmpty() ? "" : "'" + key + "' ") + valueProblem(e) + " (at line "
                    + (e.getLocation() == null ? "?" : e.getLocation().getLineNr()) + ")", e);
        } catch (JacksonException e) {
            throw new IOException(file + ": " + e.getOriginalMessage() + " (at line " + (e.getLocation() == null ? "?" : e.getLocation().getLineNr())
                    + ")", e);
        }
    }

    /** The key a problem is at, as the user wrote it: {@code loss.temperature}, {@code shards[2].file}. */
    private static String path(JsonMappingException e) {
        StringBuilder path = new StringBuilder();
        for (var ref : e.getPath()) {
            if (ref.getFieldName() != null) path.append(path.isEmpty() ? "" : ".").append(ref.getFieldName());
            else if (ref.getIndex() >= 0) path.append('[').append(ref.getIndex()).append(']');
        }
        return path.toString();
    }

    /**
     * "unknown key 'loss.temprature' (did you mean 'temperature'? known here: alpha, divergence,
     * ...)": the known keys sorted, and the nearest one suggested where it is a likely typo (at most
     * a third of its letters edited, two at least).
     */
    static String unknownKey(String path, String key, Collection<Object> known) {
        List<String> names = known.stream().map(String::valueOf).sorted().toList();
        String nearest = null;
        int best = Integer.MAX_VALUE;
        for (String name : key == null ? List.<String>of() : names) {
            int d = editDistance(key, name);
            if (d < best) {
                best = d;
                nearest = name;
            }
        }
        String hint = nearest != null && best <= Math.max(2, nearest.length() / 3) ? "did you mean '" + nearest + "'? " : "";
        return "unknown key '" + path + "' (" + hint + "known here: " + String.join(", ", names) + ")";
    }

    /** Levenshtein distance: insertions, deletions and substitutions, one each. */
    private static int editDistance(String a, String b) {
        int[] prev = new int[b.length() + 1], cur = new int[b.length() + 1];
        for (int j = 0; j <= b.length(); j++) prev[j] = j;
        for (int i = 1; i <= a.length(); i++) {
            cur[0] = i;
            for (int j = 1; j <= b.length(); j++) {
                cur[j] = Math.min(Math.min(cur[j - 1], prev[j]) + 1, prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1));
            }
            int[] t = prev;
            prev = cur;
            cur = t;
        }
        return prev[b.length()];
    }

    /** What is wrong with a value, in the file's terms (a JSON type), not Java's. */
    private static String valueProblem(MismatchedInputException e) {
        Class<?> target = e.getTargetType();
        String want = target == null ? "another value" : target == int.class || target == Integer.class || target == long.class
                || target == Long.class ? "an integer" : target == double.class || target == Double.class || target == float.class
                || target == Float.class ? "a number" : target == boolean.class || target == Boolean.class ? "true or false"
                : target == String.class ? "a string" : "an object of the documented keys";
        if (e.getMessage() != null && e.getMessage().startsWith("Trailing token")) return "the JSON ends, but more text follows it";
        return "must be " + want;
    }
}
