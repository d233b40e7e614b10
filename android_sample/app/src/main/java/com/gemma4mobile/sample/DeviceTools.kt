package com.gemma4mobile.sample

import android.content.ContentUris
import android.content.Context
import android.content.Intent
import android.hardware.camera2.CameraCharacteristics
import android.hardware.camera2.CameraManager
import android.os.BatteryManager
import android.provider.AlarmClock
import android.provider.CalendarContract
import com.gemma4mobile.agent.Json
import com.gemma4mobile.agent.ToolHandler
import com.gemma4mobile.agent.ToolRegistry
import com.gemma4mobile.agent.ToolSpec
import java.time.LocalDate
import java.time.ZoneId
import java.time.format.DateTimeParseException

/** The phone's tools, declared with JSON schemas and backed by Android APIs. */
class DeviceTools(
    private val context: Context,
) {
    @Suppress("UNCHECKED_CAST")
    private fun schema(json: String) = Json.parse(json) as Map<String, Any?>

    fun registry(): ToolRegistry =
        ToolRegistry()
            .register(
                ToolSpec(
                    "battery_level",
                    "Read the battery charge level and whether the phone is charging.",
                    schema("""{"type": "object", "properties": {}}"""),
                ),
                ToolHandler { batteryLevel() },
            ).register(
                ToolSpec(
                    "set_alarm",
                    "Set an alarm in the clock app.",
                    schema(
                        """{"type": "object", "properties": {
                        "hour": {"type": "integer", "description": "Hour, 0-23", "minimum": 0, "maximum": 23},
                        "minute": {"type": "integer", "description": "Minute, 0-59", "minimum": 0, "maximum": 59},
                        "label": {"type": "string", "description": "Alarm label"}},
                        "required": ["hour", "minute"]}""",
                    ),
                ),
                ToolHandler { args -> setAlarm(args) },
            ).register(
                ToolSpec(
                    "flashlight",
                    "Turn the flashlight on or off.",
                    schema("""{"type": "object", "properties": {"on": {"type": "boolean", "description": "true to turn it on"}}, "required": ["on"]}"""),
                ),
                ToolHandler { args -> flashlight(args["on"] as Boolean) },
            ).register(
                ToolSpec(
                    "calendar_lookup",
                    "List calendar events from a date for a number of days.",
                    schema(
                        """{"type": "object", "properties": {
                        "date": {"type": "string", "description": "First day, YYYY-MM-DD"},
                        "days": {"type": "integer", "description": "Number of days", "minimum": 1, "maximum": 14}},
                        "required": ["date"]}""",
                    ),
                ),
                ToolHandler { args -> calendarLookup(args) },
            )

    private fun batteryLevel(): Map<String, Any?> {
        val bm = context.getSystemService(Context.BATTERY_SERVICE) as BatteryManager
        return mapOf(
            "percent" to bm.getIntProperty(BatteryManager.BATTERY_PROPERTY_CAPACITY),
            "charging" to bm.isCharging,
        )
    }

    private fun setAlarm(args: Map<String, Any?>): Map<String, Any?> {
        val hour = (args["hour"] as Number).toInt()
        val minute = (args["minute"] as Number).toInt()
        val intent =
            Intent(AlarmClock.ACTION_SET_ALARM)
                .putExtra(AlarmClock.EXTRA_HOUR, hour)
                .putExtra(AlarmClock.EXTRA_MINUTES, minute)
                .putExtra(AlarmClock.EXTRA_SKIP_UI, true)
                .addFlags(Intent.FLAG_ACTIVITY_NEW_TASK)
        (args["label"] as String?)?.let { intent.putExtra(AlarmClock.EXTRA_MESSAGE, it) }
        if (intent.resolveActivity(context.packageManager) == null) return mapOf("error" to "no clock app handles alarms")
        context.startActivity(intent)
        return mapOf("ok" to true, "time" to String.format("%02d:%02d", hour, minute))
    }

    private fun flashlight(on: Boolean): Map<String, Any?> {
        val cm = context.getSystemService(Context.CAMERA_SERVICE) as CameraManager
        val id =
            cm.cameraIdList.firstOrNull {
                cm.getCameraCharacteristics(it).get(CameraCharacteristics.FLASH_INFO_AVAILABLE) == true
            } ?: return mapOf("error" to "this phone has no flashlight")
        cm.setTorchMode(id, on)
        return mapOf("ok" to true, "on" to on)
    }

    private fun calendarLookup(args: Map<String, Any?>): Map<String, Any?> {
        val first =
            try {
                LocalDate.parse(args["date"] as String)
            } catch (e: DateTimeParseException) {
                return mapOf("error" to "date must be YYYY-MM-DD")
            }
        val days = (args["days"] as Number?)?.toLong() ?: 1L
        val zone = ZoneId.systemDefault()
        val begin = first.atStartOfDay(zone).toInstant().toEpochMilli()
        val end =
            first
                .plusDays(days)
                .atStartOfDay(zone)
                .toInstant()
                .toEpochMilli()
        val uri =
            CalendarContract.Instances.CONTENT_URI
                .buildUpon()
                .also {
                    ContentUris.appendId(it, begin)
                    ContentUris.appendId(it, end)
                }.build()
        val projection = arrayOf(CalendarContract.Instances.TITLE, CalendarContract.Instances.BEGIN, CalendarContract.Instances.EVENT_LOCATION)
        val events = ArrayList<Map<String, Any?>>()
        try {
            context.contentResolver.query(uri, projection, null, null, CalendarContract.Instances.BEGIN + " ASC")?.use { c ->
                while (c.moveToNext() && events.size < 20) {
                    val start =
                        java.time.Instant
                            .ofEpochMilli(c.getLong(1))
                            .atZone(zone)
                            .toLocalDateTime()
                    events.add(mapOf("title" to c.getString(0), "start" to start.toString(), "location" to (c.getString(2) ?: "")))
                }
            }
        } catch (e: SecurityException) {
            return mapOf("error" to "calendar permission not granted")
        }
        return mapOf("events" to events, "count" to events.size)
    }
}
